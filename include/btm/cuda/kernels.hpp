// kernels.hpp: host-callable launchers of the CUDA engine's kernels, on device pointers, one
// header per op in cuda/kernels/ (kernels and launchers of an op in src/cuda/kernels/OP.cu),
// each the bf16 counterpart of a function of cpu/kernels.hpp (the kernel cases,
// cuda/kernel_cases.hpp, check every one against it), and the cuBLASLt GEMM context.
// Conventions follow cpu/kernels.hpp: row-major, weights [out, in]; activations and activation
// gradients are bf16, parameter gradients fp32 and ACCUMULATED (+=). Every launcher enqueues
// on `stream` and returns at once; every kernel is deterministic (no floating-point atomics), so
// the same inputs give the same bits on the same GPU. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include "btm/cuda/kernels/adamw.hpp"            // the optimizer step
#include "btm/cuda/kernels/attention.hpp"        // materialized causal attention, its helpers
#include "btm/cuda/kernels/bf16.hpp"             // the bf16 type
#include "btm/cuda/kernels/bias.hpp"             // the bias gradient
#include "btm/cuda/kernels/blas.hpp"             // cuBLASLt GEMMs: the linear layers
#include "btm/cuda/kernels/conversions.hpp"      // fp32 <-> bf16
#include "btm/cuda/kernels/crossentropy.hpp"     // the classifier's loss and gradient
#include "btm/cuda/kernels/encoder.hpp"          // token and position embeddings
#include "btm/cuda/kernels/fixed_point.hpp"      // exact 64-bit fixed-point sums
#include "btm/cuda/kernels/flash_attention.hpp"  // fused causal attention (head dim 64)
#include "btm/cuda/kernels/gelu.hpp"             // GELU
#include "btm/cuda/kernels/kv_attention.hpp"     // attention over the key/value cache
#include "btm/cuda/kernels/layernorm.hpp"        // LayerNorm
#include "btm/cuda/kernels/reductions.hpp"       // mean, sum of squares
