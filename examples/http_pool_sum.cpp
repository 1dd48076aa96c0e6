// Seed 000, "cluster & fork, Piscina": the /sum route awaits pool.run on a pool of
// max(1, cpus - 1) workers created once.
//
//   const pool = new Piscina({ filename: "./longTask.js", maxThreads: Math.max(1, os.cpus().length
//   - 1) }); app.get("/sum", async (req, res) => {
//     const { result, pid } = await pool.run({ n: 1e10 });
//     res.send({ result, child_pid: pid, main_pid: process.pid })
//   })
//
// Over worker processes (this binary, serving the pool's tasks): the reply's child_pid is a real
// process id, one of the pool's, where Piscina can only give a threadId. Four requests at once;
// n is 1e8 (see pool_piscina_sum.cpp).
#include "http/router.hpp"

#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <set>
#include <thread>
#include <unistd.h>

namespace hr = http_router;

namespace {

// longTask.js: runs in a pool worker.
childproc::message long_computation(const childproc::message& task) {
  const auto count = task.json().at("n").to_number<long long>();
  volatile long long sum = 0; // volatile: keep the loop, as the snippet's is real work
  for (long long i = 0; i < count; ++i)
    sum = sum + i;
  return hr::json::value{{"result", sum}, {"pid", ::getpid()}};
}

} // namespace

int main() {
  boost::asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, long_computation);

  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  childproc::pool pool(io, {.max_workers = std::max(1u, cpus - 1)});
  std::set<long> workers;
  pool.on_worker_create([&](pid_t pid) { workers.insert(pid); });

  auto app = std::make_shared<hr::router>();
  app->get("/sum", [&pool](hr::context& c) -> hr::awaitable<void> {
    const childproc::message task(hr::json::value{{"n", 100'000'000}});
    const auto answer = co_await pool.async_run(task, hr::use_awaitable);
    hr::json::object reply;
    reply["result"] = answer.json().at("result");
    reply["child_pid"] = answer.json().at("pid");
    reply["main_pid"] = ::getpid();
    hr::send_json(c, reply);
  });

  std::set<long> child_pids;
  int answered = 0;
  hr::run_with_client(io, app, [&](hr::tcp::endpoint at) -> hr::awaitable<void> {
    auto one = [&]() -> hr::awaitable<void> {
      const auto res = co_await hr::fetch(at, hr::http::verb::get, "/sum");
      fmt::print("{}\n", hr::show(hr::http::verb::get, "/sum", res));
      child_pids.insert(hr::json::parse(res.body()).at("child_pid").to_number<long>());
      ++answered;
    };
    using namespace boost::asio::experimental::awaitable_operators;
    co_await (one() && one() && one() && one());
    co_await pool.async_close(hr::use_awaitable);
  });
  const bool from_pool = std::all_of(child_pids.begin(), child_pids.end(), [&](long pid) {
    return workers.count(pid) == 1 && pid != ::getpid();
  });
  fmt::print("{} requests answered by {} of the pool's {} workers, all pool workers: {}\n",
             answered, child_pids.size(), workers.size(), from_pool);
}
