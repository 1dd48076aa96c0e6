// The source document's memory isolation example: the parent sends its data to a forked child,
// then changes its own copy; the child changes the copy it received. Neither sees the other's
// change: separate processes, separate memory.
//
//   let mainData = { count: 0 };
//   const child = fork('child.js');
//   child.send({ data: mainData });
//   mainData.count = 100;
//   console.log('Main data:', mainData);            // { count: 100 }
//
//   // child.js
//   process.on('message', (msg) => {
//     let childData = msg.data;
//     childData.count = 999;
//     console.log('Child data:', childData);         // { count: 999 }
//     process.send({ childData });
//   });
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <string_view>

namespace {

int worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&](const childproc::message& msg) {
    boost::json::value child_data = msg.json().at("data");
    child_data.as_object()["count"] = 999;
    fmt::print("Child data: {}\n", boost::json::serialize(child_data));
    std::fflush(stdout);
    parent.send(boost::json::value{{"childData", child_data}});
  });
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "child")
    return worker();

  boost::asio::io_context io;
  boost::json::value main_data = {{"count", 0}};

  auto child = childproc::fork(io, childproc::self_exe(), {"child"});
  child.send(boost::json::value{{"data", main_data}});

  // Modify main data: the child got a copy.
  main_data.as_object()["count"] = 100;
  fmt::print("Main data: {}\n", boost::json::serialize(main_data));
  std::fflush(stdout);

  child.on_message([&](const childproc::message& msg) {
    fmt::print("Child sent back: {}\n", boost::json::serialize(msg.json()));
    fmt::print("Main data remains: {}\n", boost::json::serialize(main_data));
    child.disconnect();
  });
  io.run();
}
