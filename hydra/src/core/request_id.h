// Request ids and connection uuids: accept a caller's well-formed id, else generate one.
#pragma once

#include <string>
#include <string_view>

namespace hydra {

// 1..64 characters of [A-Za-z0-9._:-]: safe to echo in headers and logs.
bool valid_request_id(std::string_view id);
// A random 128-bit id in the canonical UUID v4 form, from the CSPRNG (unguessable: it addresses a connection).
std::string generate_uuid();

}  // namespace hydra
