// nccl_comm.hpp: the NCCL communicator of one ELM group, built from the group's MPI
// communicator: ncclGetUniqueId on the group's rank 0, MPI_Bcast inside the group,
// ncclCommInitRank on the device already selected by the engine. Implements Communicator on
// device buffers. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <memory>

#include "btm/dist/comm.hpp"

namespace btm {

std::unique_ptr<Communicator> make_nccl_comm(MpiComm& group, int gpu);

}  // namespace btm
