// A pool worker built by childproc_add_worker (tests/CMakeLists.txt), for test_worker_build.cpp:
// "sum" adds {a, b}; "pid" answers its process id.
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>

#include <unistd.h>

int main() {
  boost::asio::io_context io;
  return childproc::serve(
      io, childproc::task_table{{"sum",
                                 [](const childproc::message& task) {
                                   return childproc::message(
                                       task.json().at("a").to_number<std::int64_t>() +
                                       task.json().at("b").to_number<std::int64_t>());
                                 }},
                                {"pid", [](const childproc::message&) {
                                   return childproc::message(static_cast<std::int64_t>(::getpid()));
                                 }}});
}
