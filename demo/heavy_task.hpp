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

/// The nice increment of every worker (process or thread): the event loop's wake-ups then win
/// the CPU over the heavy work, as Piscina's niceIncrement intends. Inline, nothing can do that.
inline constexpr int worker_nice = 10;
/// Lowers the calling thread's priority by worker_nice (on Linux, setpriority of a thread id
/// changes that thread only).
void lower_thread_priority();

/// The argument that starts this binary as the per-request worker of fork mode.
inline constexpr const char* fork_worker_flag = "--fork-worker";

/// heavy-worker.js: answers {"task": "compute", "data": n} with {"result", "pid"}, until the parent
/// disconnects. Returns the exit status.
int run_fork_worker();

} // namespace demo
