// kernels.hpp: the plain fp32 CPU reference of every layer of the model, one header per op in
// cpu/kernels/ (its code in src/cpu/kernels/OP.cpp). The CPU engine is built from these; every
// CUDA kernel is checked against them (the kernel cases, cuda/kernel_cases.hpp).
// Conventions: row-major; weights are [out, in]; activation gradients (dinp, dqkv, ...) are
// OVERWRITTEN; parameter gradients (dw, db, dwte, ...) are ACCUMULATED (+=). Matmuls (and the
// attention score products) go through OpenBLAS sgemm; every other loop is an OpenMP loop with
// a static schedule. Work is cut by partitions that do not depend on the thread count (rows,
// output channels, (batch, head) pairs, fixed-size chunks), each reduction is summed in a fixed
// order, and sgemm is called on blocks of a fixed shape with OpenBLAS on one thread inside the
// OpenMP loops. So every kernel gives the same bytes for any number of OpenMP threads.
#pragma once

#include "btm/cpu/kernels/adamw.hpp"         // AdamW on one tensor
#include "btm/cpu/kernels/attention.hpp"     // causal multi-head attention
#include "btm/cpu/kernels/crossentropy.hpp"  // softmax and cross-entropy
#include "btm/cpu/kernels/encoder.hpp"       // token and position embeddings
#include "btm/cpu/kernels/gelu.hpp"          // GELU (tanh approximation)
#include "btm/cpu/kernels/kv_attention.hpp"  // attention over a key/value cache (decoding)
#include "btm/cpu/kernels/layernorm.hpp"     // LayerNorm
#include "btm/cpu/kernels/matmul.hpp"        // linear layers
#include "btm/cpu/kernels/reductions.hpp"    // sum of squares
#include "btm/cpu/kernels/residual.hpp"      // residual connection
