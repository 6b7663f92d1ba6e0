// HTTP header fields as they travel: name/value pairs in the order received or to be sent, names as spelled,
// repeats kept. The WebSocket client hands them out (the 101's headers, a refused handshake's); hydra's HTTP parser
// and WebSocket handshake read and write them. Look one up with a case-insensitive name (WsClient::response_header).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace hydra {

using HeaderFields = std::vector<std::pair<std::string, std::string>>;

}  // namespace hydra
