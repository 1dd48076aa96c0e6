// Built against the installed package by the package_consumer test: a spawn, and a pool whose
// workers are this binary (serve()), a worker built by childproc_add_worker (worker.cpp) and a
// Node script (the installed childproc-pool-worker.js).
#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>

#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

namespace {

std::string sum_through(boost::asio::io_context& io, childproc::pool_options options) {
  childproc::pool pool(io, std::move(options));
  std::string answer = "no answer";
  pool.async_run(boost::json::value{{"a", 1}, {"b", 2}}, {.name = "sum"},
                 [&](boost::system::error_code ec, childproc::message result) {
                   answer = ec ? ec.message() : std::to_string(result.json().to_number<int>());
                   pool.async_close([](boost::system::error_code) {});
                 });
  io.restart();
  io.run();
  return answer;
}

} // namespace

int main() {
  boost::asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, childproc::task_table{{"sum", [](const childproc::message& m) {
                                                         return childproc::message(
                                                             m.json().at("a").to_number<int>() +
                                                             m.json().at("b").to_number<int>());
                                                       }}});
  std::string out;
  std::optional<int> code;
  auto child = childproc::spawn(io, "echo", {"-n", "hello from the package"});
  child.out().on_data([&](std::string_view chunk) { out += chunk; });
  child.on_close([&](std::optional<int> c, std::optional<int>) { code = c; });
  io.run();
  std::cout << "consumer: spawned echo, read '" << out << "', exit " << code.value_or(-1) << "\n";
  const auto from_cpp = sum_through(io, {.min_workers = 1, .max_workers = 1});
  std::cout << "consumer: pool 1+2=" << from_cpp << "\n";
  const auto from_worker =
      sum_through(io, {.program = CONSUMER_WORKER, .args = {}, .min_workers = 1, .max_workers = 1});
  std::cout << "consumer: childproc_add_worker pool 1+2=" << from_worker << "\n";
  std::string from_node = "3"; // node is optional on the machine
  if (std::system("node --version > /dev/null 2>&1") == 0)
    from_node =
        sum_through(io, {.program = CONSUMER_NODE_WORKER, .min_workers = 1, .max_workers = 1});
  std::cout << "consumer: node pool 1+2=" << from_node << "\n";
  return code == 0 && from_cpp == "3" && from_worker == "3" && from_node == "3" ? 0 : 1;
}
