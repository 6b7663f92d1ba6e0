// What changes a config document before it is validated: ${VAR} / ${VAR:-default} from the environment in every
// string, then each --set key=value, typed by the schema at its key.
#pragma once

#include <string>

#include <hydra/config.h>
#include <hydra/json.h>

namespace hydra::config {

// Substitutes ${VAR} and ${VAR:-default} in every string of `value` (as in the shell, ":-" also replaces a variable
// that is set but empty). An unset variable without a default, or a malformed reference → ConfigError.
void substitute(Json& value, const std::string& source, const std::string& path, const EnvLookup& env);

// Applies one --set "dotted.key=value" to `doc`: the key is looked up in `root_schema` first (a typo is reported
// before the document is touched), the value typed and validated by the schema there. Under an open-ended object
// the rest of the path is one key (librdkafka property names contain dots).
void apply_set(Json& doc, const std::string& item, const Json& root_schema, const std::string& source);

}  // namespace hydra::config
