// Seed 004, "Direct app.use() - Simple Approach": every route in the main file.
//
//   app.get('/users', (req, res) => { res.json({ users: [] }); });
//   app.post('/users', (req, res) => { res.json({ message: 'User created' }); });
//   app.get('/products', (req, res) => { res.json({ products: [] }); });
//
// The routes are on the examples' small dispatcher (http/router.hpp, Boost.Beast): childproc is
// not a web framework. The program serves on 127.0.0.1, port 0, sends its own requests, exits.
#include "http/router.hpp"

#include <fmt/core.h>

namespace hr = http_router;

int main() {
  boost::asio::io_context io;
  auto app = std::make_shared<hr::router>();
  app->get("/users", hr::sync([](hr::context& c) {
             hr::send_json(c, {{"users", hr::json::array()}});
           }));
  app->post("/users", hr::sync([](hr::context& c) {
              hr::send_json(c, {{"message", "User created"}});
            }));
  app->get("/products", hr::sync([](hr::context& c) {
             hr::send_json(c, {{"products", hr::json::array()}});
           }));

  hr::run_with_client(io, app, [](hr::tcp::endpoint at) -> hr::awaitable<void> {
    using verb = hr::http::verb;
    for (auto [method, target] :
         {std::pair{verb::get, "/users"}, std::pair{verb::post, "/users"},
          std::pair{verb::get, "/products"}, std::pair{verb::get, "/orders"}}) {
      const auto res = co_await hr::fetch(at, method, target);
      fmt::print("{}\n", hr::show(method, target, res));
    }
  });
}
