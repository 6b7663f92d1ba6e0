// `hydra cluster gc`: deletes the node topics of hosts gone for cluster.node_ttl_s.
#pragma once

#include <ostream>
#include <string>

#include <hydra/config.h>

namespace hydra::cluster {

// Lists the topics "<prefix>.node.<id>" (before reading presence, so that a host starting meanwhile, which beats
// before it creates its node topic, is never taken for gone), reads the presence topic to its end, and prints one
// line per node topic: "live" when its host's last heartbeat ("node:<id>" record) is younger than
// cluster.node_ttl_s, "kept" when it stopped cleanly (a tombstone) less than that ago, "gone" when its last record is
// older than that or there is none. Unless
// `dry_run`, deletes the gone ones (DeleteTopics). Returns the exit status: 0, 1 when Kafka cannot be read or a
// deletion failed.
int gc(const Config& config, const std::string& prefix, bool dry_run, std::ostream& out, std::ostream& err);

}  // namespace hydra::cluster
