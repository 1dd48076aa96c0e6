// A user type sent over channels as is, through Boost.JSON's value_from / value_to.
#pragma once

#include <boost/json.hpp>

#include <string>
#include <vector>

namespace shop {

struct order {
  std::string customer;
  std::vector<int> item_prices;
  bool express = false;
};

inline void tag_invoke(boost::json::value_from_tag, boost::json::value& v, const order& o) {
  v = {{"customer", o.customer},
       {"item_prices", boost::json::value_from(o.item_prices)},
       {"express", o.express}};
}

inline order tag_invoke(boost::json::value_to_tag<order>, const boost::json::value& v) {
  const auto& obj = v.as_object();
  return {boost::json::value_to<std::string>(obj.at("customer")),
          boost::json::value_to<std::vector<int>>(obj.at("item_prices")),
          obj.at("express").as_bool()};
}

} // namespace shop
