// Seed 004, "1. E-commerce Order Processing": /place-order answers at once; an email, an
// inventory and a payment worker then run, each in its own process.
//
//   app.post('/place-order', async (req, res) => {
//     const emailWorker = fork('workers/email-worker.js');      // and inventory, payment
//     emailWorker.send({ task: 'send-confirmation', order });   // 'update-stock',
//     'process-payment' res.json({ message: 'Order received', orderId: order.id, status:
//     'processing' });
//   });
//   // workers/email-worker.js
//   process.on('message', async (msg) => {
//     if (msg.task === 'send-confirmation') {
//       console.log(`Email worker ${process.pid} processing order ${msg.order.id}`);
//       await sendConfirmationEmail(msg.order);
//       process.send({ task: 'email-sent', orderId: msg.order.id, workerPID: process.pid });
//     }
//   });
//
// The workers are this binary ("email", "inventory", "payment" and a data folder). The email is
// an .eml file in <folder>/outbox; the stock a JSON file, <folder>/stock.json; the payment worker
// runs with a 5 s timeout (fork_options.timeout) and declines an amount of 0 or less. The route
// replies while the three workers are still running; their reports come afterwards.
#include "fork_task.hpp"
#include "http/router.hpp"

#include <boost/asio/co_spawn.hpp>
#include <fmt/core.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <unistd.h>

namespace hr = http_router;
namespace fs = std::filesystem;
using hr::json::value;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

value email_worker(const fs::path& folder, const value& msg) {
  const auto& order = msg.at("order");
  const auto id = order.at("id").to_number<long>();
  fmt::print("Email worker {} processing order {}\n", ::getpid(), id);
  fs::create_directories(folder / "outbox");
  std::ofstream(folder / "outbox" / fmt::format("order-{}.eml", id))
      << "To: " << order.at("email").as_string().c_str() << "\r\n"
      << "Subject: Order " << id << " confirmed\r\n\r\n"
      << "Thank you for your order.\r\n";
  return {{"task", "email-sent"}, {"orderId", id}, {"workerPID", ::getpid()}};
}

value inventory_worker(const fs::path& folder, const value& msg) {
  auto stock = hr::json::parse(read_file(folder / "stock.json")).as_object();
  for (const auto& item : msg.at("order").at("items").as_array()) {
    auto& count = stock[item.at("sku").as_string()];
    count = count.to_number<long>() - item.at("qty").to_number<long>();
  }
  std::ofstream(folder / "stock.json") << hr::json::serialize(stock);
  return {
      {"task", "stock-updated"}, {"orderId", msg.at("order").at("id")}, {"workerPID", ::getpid()}};
}

value payment_worker(const value& msg) {
  const bool accepted = msg.at("order").at("amount").to_number<double>() > 0;
  return {{"task", accepted ? "payment-accepted" : "payment-declined"},
          {"orderId", msg.at("order").at("id")},
          {"workerPID", ::getpid()}};
}

int worker(std::string_view kind, const fs::path& folder) {
  return fork_task::serve_tasks([&](const value& msg) {
    if (kind == "email")
      return email_worker(folder, msg);
    if (kind == "inventory")
      return inventory_worker(folder, msg);
    return payment_worker(msg);
  });
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 2)
    return worker(argv[1], argv[2]);

  char folder_template[] = "/tmp/order_processing.XXXXXX";
  const fs::path folder = ::mkdtemp(folder_template);
  std::ofstream(folder / "stock.json") << R"({"lamp":10,"desk":3})";

  boost::asio::io_context io;
  std::map<std::string, std::string> reports; // task -> "order N"
  int running = 0, running_at_reply = 0;
  auto app = std::make_shared<hr::router>();
  app->post(
      "/place-order", hr::sync([&](hr::context& c) {
        const auto order = hr::json::parse(c.req.body());
        const std::pair<const char*, const char*> workers[] = {{"email", "send-confirmation"},
                                                               {"inventory", "update-stock"},
                                                               {"payment", "process-payment"}};
        for (const auto& worker : workers) {
          const char* kind = worker.first;  // not a structured binding: clang 14 cannot
          const char* task = worker.second; // capture one
          childproc::fork_options options;
          if (std::string_view(kind) == "payment")
            options.timeout = std::chrono::seconds(5);
          ++running;
          boost::asio::co_spawn(
              io,
              fork_task::run(childproc::self_exe(), {kind, folder.string()},
                             value{{"task", task}, {"order", order}}, std::move(options)),
              [&, kind](std::exception_ptr, fork_task::outcome done) {
                --running;
                reports[kind] =
                    hr::json::serialize(done.reply ? *done.reply : value{{"error", "no reply"}});
              });
        }
        running_at_reply = running;
        hr::send_json(
            c,
            {{"message", "Order received"}, {"orderId", order.at("id")}, {"status", "processing"}});
      }));

  hr::run_with_client(io, app, [&](hr::tcp::endpoint at) -> hr::awaitable<void> {
    const auto order = R"({"id":42,"email":"ada@example.com","amount":59.5,)"
                       R"("items":[{"sku":"lamp","qty":2},{"sku":"desk","qty":1}]})";
    const auto res = co_await hr::fetch(at, hr::http::verb::post, "/place-order", order);
    fmt::print("{}\n", hr::show(hr::http::verb::post, "/place-order", res));
    fmt::print("workers still running when the reply was sent: {}\n", running_at_reply);
  });

  // Every worker has reported and exited: io.run() returned.
  for (const auto& [kind, report] : reports) {
    auto shown = hr::json::parse(report);
    shown.as_object()["workerPID"] = "<pid>"; // the pids differ every run
    fmt::print("{} worker: {}\n", kind, hr::json::serialize(shown));
  }
  const auto eml = read_file(folder / "outbox" / "order-42.eml");
  fmt::print("outbox/order-42.eml: {}\n", eml.substr(0, eml.find("\r\n")));
  fmt::print("stock.json: {}\n", read_file(folder / "stock.json"));
  fs::remove_all(folder);
}
