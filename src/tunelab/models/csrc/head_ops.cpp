// The quantized lm_head's candidate search and exact rescoring (models/quant.py RescoredHead), registered as
// TORCH_LIBRARY_FRAGMENT(tunelab_quant, m) in the same extension as quant_gemv*.cpp (models/quant_kernels.py).
