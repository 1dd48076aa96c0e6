// The source document's execFile snippet, with script.sh beside this file:
//
//   execFile("./script.sh", (error, stdout, stderr) => { ... console.log(`stdout: ${stdout} `) })
//
//   #!/bin/bash
//   ls -lh
//
// The program runs directly (no shell between us and it), so its arguments are never parsed by
// a shell. Run it from the examples/ directory (the ctest test does).
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

int main() {
  boost::asio::io_context io;

  childproc::async_exec_file(
      io, "./script.sh", {}, [](boost::system::error_code ec, childproc::exec_result result) {
        if (ec) {
          fmt::print("error: {}\n", childproc::exec_error(ec, result).what());
          return;
        }
        if (!result.err.empty()) {
          fmt::print("error: {}\n", result.err);
          return;
        }
        fmt::print("stdout: {} \n", result.out);
      });

  io.run();
}
