// Seed 004, "Best Practices › Router Organization": routes organised by feature (users,
// products), each router with its own middleware for authentication, validation and logging.
//
//   // Good: /routes/users.js, /routes/products.js
//   router.use(authenticate);
//   router.use(validateInput);
//   router.use(logRequest);
//
// authenticate answers 401 without a bearer token; validateInput answers 400 to a POST whose body
// is not a JSON object with a "name"; logRequest prints the request. A global middleware
// (app.use(fn)) runs first and counts the requests.
#include "http/router.hpp"

#include <fmt/core.h>

#include <string>

namespace hr = http_router;

namespace {

bool authenticate(hr::context& c) {
  if (c.req[hr::http::field::authorization] == "Bearer secret")
    return true;
  hr::send_json(c, {{"error", "unauthorized"}}, hr::http::status::unauthorized);
  return false;
}

bool validate_input(hr::context& c) {
  if (c.req.method() != hr::http::verb::post)
    return true;
  boost::system::error_code ec;
  const auto body = hr::json::parse(c.req.body(), ec);
  if (!ec && body.is_object() && body.as_object().contains("name"))
    return true;
  hr::send_json(c, {{"error", "a JSON object with a name is required"}},
                hr::http::status::bad_request);
  return false;
}

hr::middleware log_request(std::string feature) {
  return [feature](hr::context& c) {
    fmt::print("[{}] {} {}\n", feature, std::string(hr::http::to_string(c.req.method())),
               std::string(c.req.target()));
    return true;
  };
}

// A feature's router: the same three middleware, then the feature's own routes.
std::shared_ptr<hr::router> feature_router(const std::string& feature) {
  auto router = std::make_shared<hr::router>();
  router->use(authenticate).use(validate_input).use(log_request(feature));
  router->get("/", hr::sync([feature](hr::context& c) {
                hr::send_json(c, {{feature, hr::json::array()}});
              }));
  router->post(
      "/", hr::sync([feature](hr::context& c) {
        const auto name = hr::json::parse(c.req.body()).at("name");
        hr::send_json(c, {{"created", feature}, {"name", name}}, hr::http::status::created);
      }));
  return router;
}

} // namespace

int main() {
  boost::asio::io_context io;
  auto app = std::make_shared<hr::router>();
  int seen = 0;
  app->use([&seen](hr::context&) { // global, before every feature's: counts the requests
    ++seen;
    return true;
  });
  app->use("/users", feature_router("users"));       // routes/users.js
  app->use("/products", feature_router("products")); // routes/products.js

  hr::run_with_client(io, app, [&seen](hr::tcp::endpoint at) -> hr::awaitable<void> {
    using verb = hr::http::verb;
    struct call {
      verb method;
      const char* target;
      const char* body;
      bool token;
    };
    const call calls[] = {{verb::get, "/users", "", false},
                          {verb::get, "/users", "", true},
                          {verb::post, "/users", "{\"title\":1}", true},
                          {verb::post, "/users", "{\"name\":\"ada\"}", true},
                          {verb::get, "/products", "", true},
                          {verb::post, "/products", "{\"name\":\"lamp\"}", true}};
    for (const auto& each : calls) {
      std::vector<std::pair<std::string, std::string>> headers;
      if (each.token)
        headers.emplace_back("Authorization", "Bearer secret");
      const auto res = co_await hr::fetch(at, each.method, each.target, each.body, headers);
      fmt::print("{}\n", hr::show(each.method, each.target, res));
    }
    fmt::print("global middleware saw {} requests\n", seen);
  });
}
