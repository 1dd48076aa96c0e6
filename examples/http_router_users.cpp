// Seed 004, "Router - Modular Approach" and "Example: API Versioning with Router": a users router
// with its own middleware, mounted at /api/users; and two versions of it at /api/v1/users and
// /api/v2/users.
//
//   // routes/users.js
//   router.use((req, res, next) => { console.log('User route accessed'); next(); });
//   router.get('/', (req, res) => { res.json({ users: [] }); });
//   router.post('/', (req, res) => { res.json({ message: 'User created' }); });
//   // main app.js
//   app.use('/api/users', userRoutes);
//
//   app.use('/api/v1/users', require('./routes/v1/users'));   // router.get('/', getUsersV1)
//   app.use('/api/v2/users', require('./routes/v2/users'));   // router.get('/', getUsersV2)
//
// Each "file" of the snippet is a function returning its router. The router's middleware runs
// only for requests under its prefix: /health does not print "User route accessed".
#include "http/router.hpp"

#include <fmt/core.h>

namespace hr = http_router;

namespace {

// routes/users.js
std::shared_ptr<hr::router> user_routes() {
  auto router = std::make_shared<hr::router>();
  router->use([](hr::context&) {
    fmt::print("User route accessed\n");
    return true; // next()
  });
  router->get("/", hr::sync([](hr::context& c) {
                hr::send_json(c, {{"users", hr::json::array()}});
              }));
  router->post("/", hr::sync([](hr::context& c) {
                 hr::send_json(c, {{"message", "User created"}});
               }));
  return router;
}

// routes/v1/users.js: getUsersV1, names only.
std::shared_ptr<hr::router> users_v1() {
  auto router = std::make_shared<hr::router>();
  router->get("/", hr::sync([](hr::context& c) {
                hr::send_json(c, {{"version", 1}, {"users", {"ada", "linus"}}});
              }));
  return router;
}

// routes/v2/users.js: getUsersV2, objects with an id, the shape a v2 would change.
std::shared_ptr<hr::router> users_v2() {
  auto router = std::make_shared<hr::router>();
  router->get("/", hr::sync([](hr::context& c) {
                hr::send_json(
                    c, {{"version", 2},
                        {"users", {{{"id", 1}, {"name", "ada"}}, {{"id", 2}, {"name", "linus"}}}}});
              }));
  return router;
}

} // namespace

int main() {
  boost::asio::io_context io;
  auto app = std::make_shared<hr::router>();
  app->get("/health", hr::sync([](hr::context& c) { hr::send_json(c, {{"ok", true}}); }));
  app->use("/api/users", user_routes());
  app->use("/api/v1/users", users_v1());
  app->use("/api/v2/users", users_v2());

  hr::run_with_client(io, app, [](hr::tcp::endpoint at) -> hr::awaitable<void> {
    using verb = hr::http::verb;
    for (auto [method, target] :
         {std::pair{verb::get, "/api/users"}, std::pair{verb::post, "/api/users"},
          std::pair{verb::get, "/health"}, std::pair{verb::get, "/api/v1/users"},
          std::pair{verb::get, "/api/v2/users"}}) {
      const auto res = co_await hr::fetch(at, method, target);
      fmt::print("{}\n", hr::show(method, target, res));
    }
  });
}
