// engine.hpp: the CUDA engine (bf16 compute, fp32 master weights and AdamW moments,
// cuBLASLt GEMMs, fused kernels) behind the Engine interface. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "btm/config/config.hpp"
#include "btm/model/engine.hpp"

namespace btm {

// Number of CUDA devices visible to this process (0 if the driver or devices are missing).
int cuda_visible_devices();
// The PCI bus id of visible device `gpu` ("0000:19:00.0"): the same physical GPU has the same id
// in every process, whatever CUDA_VISIBLE_DEVICES renumbered.
std::string cuda_pci_bus_id(int gpu);

// How the engine computes causal attention: Flash is the fused kernel (no T x T matrix, head
// dim 64 only; Hopper's wgmma kernels on an sm_90a build and a compute capability 9.0 GPU, the
// mma.sync ones elsewhere); FlashMmaSync the same with the mma.sync kernels on any GPU (to
// compare them on Hopper); Materialized keeps the probabilities [B, NH, T, T] per layer (cuBLAS
// batched GEMMs and a softmax kernel, any head dim); Auto picks Flash where it is supported.
enum class CudaAttention { Auto, Flash, FlashMmaSync, Materialized };

// How the MLP's GELU runs: Fused applies it (and its derivative in the backward) in the
// epilogues of the fc / fcproj-input-gradient GEMMs (cuBLASLt); Unfused runs the separate
// element-wise kernels; Auto picks Fused where its alignment needs are met (always with the
// engine's d_model multiple of 8).
enum class CudaGelu { Auto, Fused, Unfused };

// An engine on device `gpu` (cudaSetDevice is called), with activations for batches up to
// max_batch sequences of model.context tokens preallocated.
std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& model, int gpu, int max_batch,
                                         CudaAttention attention = CudaAttention::Auto,
                                         CudaGelu gelu = CudaGelu::Auto);

// Device bytes a CUDA engine allocated (parameters, optimizer state, activations, scratch);
// 0 for any other engine.
std::size_t cuda_engine_allocated_bytes(const Engine& engine);

// Caps the device memory a CUDA engine's hold_parent may use for parents (by default whatever
// fits, leaving 2 GiB + 10 % of the GPU free); parents past it are kept in host memory. Lets
// tests run the host and mixed averaging paths; no effect on other engines.
void cuda_engine_limit_parent_memory(Engine& engine, std::size_t bytes);
// The number of parents a CUDA engine holds in device memory; 0 for any other engine.
std::size_t cuda_engine_device_parents(const Engine& engine);

}  // namespace btm
