// The seeds' heavy task, and the two worker programs that compute it out of the event loop (this
// same binary, started by fork() per request or by a pool).
#pragma once

#include <childproc/serve.hpp>

#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>

namespace demo {

/// heavyComputation(n) of seed 004: the sum of n pseudo-random numbers in [0, 1). Deterministic
/// (a fixed seed), so every mode gives the same result for the same n.
double heavy_computation(std::int64_t n);

/// The n for which heavy_computation takes about `target` on this machine, in this build.
std::int64_t calibrate(std::chrono::milliseconds target);

/// A reply of /heavy-task: {"result", "worker_pid", "main_pid", ...} (extra members by mode).
boost::json::object heavy_reply(double result, long worker_pid);

/// The pool's task table: "" computes heavy_computation(task.n) in the worker.
childproc::task_table heavy_tasks();

/// Lowers the calling thread's priority by `increment` (on Linux, setpriority of a thread id
/// changes that thread only). A worker does it so that the event loop's wake-ups win the CPU
/// over the heavy work, as Piscina's niceIncrement intends.
void lower_thread_priority(int increment);

/// The argument that starts this binary as the per-request worker of fork mode; the next one is
/// its nice increment.
inline constexpr const char* fork_worker_flag = "--fork-worker";

/// heavy-worker.js: answers {"task": "compute", "data": n} with {"result", "pid"}, until the parent
/// disconnects. Returns the exit status.
int run_fork_worker(int nice_increment);

} // namespace demo
