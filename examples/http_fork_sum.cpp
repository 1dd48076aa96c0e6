// Seed 000, "fork": the /sum route forks longTask per request and replies with the worker's
// result, the worker's pid and the main pid.
//
//   app.get("/sum", (req, res) => {
//     const child = fork("./longTask.js")
//     child.send("start")
//     child.on("message", ({result, pid}) => res.send({ result, child_pid: pid, main_pid:
//     process.pid }))
//   })
//
// The worker is fork_long_task's (longTask.js's loop, 1e8 long instead of 1e10: see
// fork_long_task.cpp). The route awaits the worker's reply, then its exit (fork_task.hpp).
// Three requests: three child pids, one main pid.
#include "fork_task.hpp"
#include "http/router.hpp"

#include <childproc/childproc.hpp>

#include <fmt/core.h>

#include <filesystem>
#include <set>
#include <string_view>
#include <unistd.h>

namespace hr = http_router;

namespace {

// longTask.js is fork_long_task's worker ("fork_long_task child"), built next to this program:
// a separate program, as the snippet's fork("./longTask.js").
std::string long_task_program() {
  return (std::filesystem::path(childproc::self_exe()).parent_path() / "fork_long_task").string();
}

hr::awaitable<void> sum_route(hr::context& c) {
  // Named before the co_await: g++ 12 mishandles temporaries inside a co_await expression.
  const std::vector<std::string> args{"child"};
  const childproc::message start("start");
  const auto program = long_task_program();
  const auto done = co_await fork_task::run(program, args, start);
  if (!done.reply) {
    hr::send_json(c, {{"error", "the worker did not answer"}},
                  hr::http::status::internal_server_error);
    co_return;
  }
  hr::json::object reply;
  reply["result"] = done.reply->at("result");
  reply["child_pid"] = done.reply->at("pid");
  reply["main_pid"] = ::getpid();
  hr::send_json(c, reply);
}

} // namespace

int main() {
  boost::asio::io_context io;
  auto app = std::make_shared<hr::router>();
  app->get("/sum", sum_route);

  std::set<long> child_pids, main_pids;
  hr::run_with_client(io, app, [&](hr::tcp::endpoint at) -> hr::awaitable<void> {
    for (int i = 0; i < 3; ++i) {
      const auto res = co_await hr::fetch(at, hr::http::verb::get, "/sum");
      fmt::print("{}\n", hr::show(hr::http::verb::get, "/sum", res));
      const auto body = hr::json::parse(res.body());
      child_pids.insert(body.at("child_pid").to_number<long>());
      main_pids.insert(body.at("main_pid").to_number<long>());
    }
  });
  fmt::print("3 requests: {} child pids, {} main pid, ours: {}\n", child_pids.size(),
             main_pids.size(), main_pids.size() == 1 && *main_pids.begin() == ::getpid());
}
