"""Images for vision-language models: where they come from and how a model's processor sees them.

- `images.py`: image references in data rows (OpenAI `image_url` parts, LLaMA-Factory's `images`
  column with `<image>` markers) resolved to local files or data URLs and opened with PIL; a missing
  or unreadable image is a DataError naming file, line and field. Remote URLs are refused.
- `preprocess.py`: Qwen2-VL's resizing (`smart_resize`) and image-token counts (Gemma 3: a fixed
  count), and the transformers image processor of the family that makes the pixel values.
- `family.py`: which model types are VLMs, and each family's `ImageFormat` (image tokens, positions,
  attention among image tokens, tower and projector names).
- `tokens.py`: `<image>` markers -> the family's image token runs; `training.py`: what trains.
"""
