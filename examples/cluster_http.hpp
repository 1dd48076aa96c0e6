// What the cluster examples share: their workers serve an http_router::router (http/router.hpp,
// the examples' one Beast server) over childproc::cluster_listener, whatever the scheduling, and
// their primary checks which worker answered.
#pragma once

#include "http/router.hpp"

#include <childproc/cluster.hpp>

#include <string>
#include <string_view>

namespace cluster_http {

// The pid in a body that starts "process <pid> " or ends " from <pid>".
inline long pid_in(std::string_view body) {
  const auto from = body.rfind("from ");
  const auto digits = body.find_first_of("0123456789", from == body.npos ? 0 : from);
  return digits == std::string_view::npos ? 0 : std::stol(std::string(body.substr(digits)));
}

} // namespace cluster_http
