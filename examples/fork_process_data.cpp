// The source document's "fork() - Node.js processes" snippet: the parent sends a task with data,
// the worker maps it and sends the result back.
//
//   const child = fork('worker.js');
//   child.send({ task: 'processData', data: [1, 2, 3, 4, 5] });
//   child.on('message', (result) => console.log('Result:', result));
//
//   // worker.js
//   process.on('message', (msg) => {
//     if (msg.task === 'processData') {
//       const processed = msg.data.map(x => x * 2);
//       process.send({ processed });
//     }
//   });
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <string_view>

namespace {

int worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&](const childproc::message& msg) {
    if (msg.json().at("task") == "processData") {
      boost::json::array processed;
      for (const auto& x : msg.json().at("data").as_array())
        processed.push_back(x.to_number<long>() * 2);
      parent.send(boost::json::value{{"processed", std::move(processed)}});
    }
  });
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "child")
    return worker();

  boost::asio::io_context io;
  auto child = childproc::fork(io, childproc::self_exe(), {"child"});
  child.send(boost::json::value{{"task", "processData"}, {"data", {1, 2, 3, 4, 5}}});
  child.on_message([&](const childproc::message& result) {
    fmt::print("Result: {}\n", boost::json::serialize(result.json()));
    child.disconnect();
  });
  io.run();
}
