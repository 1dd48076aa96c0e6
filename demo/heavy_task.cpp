#include "heavy_task.hpp"

#include <childproc/channel.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace demo {

namespace json = boost::json;

double heavy_computation(std::int64_t n) {
  // xorshift64*, standing in for Math.random(): each step depends on the last, so the compiler
  // can neither skip nor vectorise the loop.
  std::uint64_t state = 0x9e3779b97f4a7c15ULL;
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    sum += static_cast<double>((state * 0x2545f4914f6cdd1dULL) >> 11) * 0x1.0p-53;
  }
  return sum;
}

std::int64_t calibrate(std::chrono::milliseconds target) {
  constexpr std::int64_t probe = 1 << 20;
  auto best = std::chrono::steady_clock::duration::max();
  for (int round = 0; round < 5; ++round) { // the best of five: the least disturbed
    const auto start = std::chrono::steady_clock::now();
    volatile double sink = heavy_computation(probe);
    (void)sink;
    best = std::min(best, std::chrono::steady_clock::now() - start);
  }
  const double per_step = std::chrono::duration<double>(best).count() / probe;
  const double steps = std::chrono::duration<double>(target).count() / per_step;
  return std::max<std::int64_t>(probe, static_cast<std::int64_t>(steps));
}

json::object heavy_reply(double result, long worker_pid) {
  json::object reply;
  reply["result"] = result;
  reply["worker_pid"] = worker_pid;
  reply["main_pid"] = ::getpid();
  return reply;
}

childproc::task_table heavy_tasks() {
  return {{"", [](const childproc::message& task) {
             const auto n = task.json().at("n").to_number<std::int64_t>();
             json::object reply;
             reply["result"] = heavy_computation(n);
             reply["pid"] = ::getpid();
             reply["thread"] = static_cast<long>(::syscall(SYS_gettid));
             return childproc::message(json::value(std::move(reply)));
           }}};
}

void lower_thread_priority(int increment) {
  const auto thread = static_cast<id_t>(::syscall(SYS_gettid));
  ::setpriority(PRIO_PROCESS, thread, ::getpriority(PRIO_PROCESS, thread) + increment);
}

int run_fork_worker(int nice_increment) {
  lower_thread_priority(nice_increment);
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&](const childproc::message& message) {
    const auto& request = message.json().as_object();
    if (request.at("task") != "compute")
      return;
    json::object reply;
    reply["result"] = heavy_computation(request.at("data").to_number<std::int64_t>());
    reply["pid"] = ::getpid();
    parent.send(json::value(std::move(reply)));
  });
  io.run(); // ends when the parent disconnects
  return 0;
}

} // namespace demo
