// The config of an in-process App for tests: every listener on an ephemeral port, two WS loops, no MQC, errors
// only, a private SQLite file; `sets` ("key=value") go on top.
#pragma once

#include <string>
#include <vector>

#include <hydra/config.h>
#include <hydra/json.h>

#include "support/temp.h"

namespace test {

inline hydra::Config app_config(std::vector<std::string> sets = {}) {
    sets.insert(sets.begin(),
                {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.address=127.0.0.1:0", "ws.io_threads=2",
                 "mqc.enabled=false", "log.level=error", "queue.sqlite.path=" + test::temp_path("q.db")});
    return hydra::Config::from_json(hydra::Json::object(), "test", sets, hydra::ConfigSchema::builtin());
}

}  // namespace test
