// Built against the installed package by the package_consumer test.
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>
#include <string>

int main() {
  boost::asio::io_context io;
  std::string out;
  std::optional<int> code;
  auto child = childproc::spawn(io, "echo", {"-n", "hello from the package"});
  child.out().on_data([&](std::string_view chunk) { out += chunk; });
  child.on_close([&](std::optional<int> c, std::optional<int>) { code = c; });
  io.run();
  std::cout << "consumer: spawned echo, read '" << out << "', exit " << code.value_or(-1) << "\n";
  return code == 0 ? 0 : 1;
}
