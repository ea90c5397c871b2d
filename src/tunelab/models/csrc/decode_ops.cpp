// Fused small CPU ops of a decode step (RMSNorm, gated activations), registered as
// TORCH_LIBRARY_FRAGMENT(tunelab_quant, m) in the same extension as quant_gemv*.cpp (models/quant_kernels.py).
