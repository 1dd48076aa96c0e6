// The source document's spawn snippet:
//
//   const child = spawn("ls", ["-lh"])
//   child.stdout.on("data", (data) => console.log("stdout", data))
//   child.stderr.on("data", (data) => console.log("stderr", data))
//   child.on("error", (err) => console.log(err))
//   child.on("exit", (code, signal) => { ...; console.log("done") })
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

int main() {
  boost::asio::io_context io;

  auto child = childproc::spawn(io, "ls", {"-lh"});

  child.out().on_data([](std::string_view data) { fmt::print("stdout {}", data); });
  child.err().on_data([](std::string_view data) { fmt::print("stderr {}", data); });
  child.on_error([](const childproc::process_error& err) { fmt::print("{}\n", err.what()); });
  child.on_exit([](std::optional<int> code, std::optional<int> signal) {
    if (code && *code != 0)
      fmt::print("exit code: {}\n", *code);
    if (signal)
      fmt::print("exit signal: {}\n", childproc::signal_name(*signal));
    fmt::print("done\n");
  });

  io.run();
}
