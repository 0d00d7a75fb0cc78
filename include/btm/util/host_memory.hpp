// host_memory.hpp: how much host memory this process can still take.
#pragma once

namespace btm {

// MemAvailable of /proc/meminfo (bytes), or the physical memory where it is not there.
double available_host_bytes();

}  // namespace btm
