// Broadcasts posted to /v1/exchange/broadcast and their arrival at every client: the broadcast scenario, and the
// three phases of the slow scenario (slow_bench.cpp).
#pragma once

#include <string>

#include "scenario.h"

namespace bench::scenario {

struct BroadcastRun {
    OJson json;
    double delivery_p99_ms = 0;
    double completion_p99_ms = 0;
    double completion_p50_ms = 0;  // the median broadcast's time to reach every client: robust to a few slow ones
};

// Connects every client of `pool` (the outcome goes to result["connect"]), pauses 500 ms so that the connect burst
// is over before the first broadcast, and returns the client that posts /v1/exchange/broadcast: to the admin
// listener if given, else to the API.
HttpClient connect_for_broadcasts(Pool& pool, const Options& o, OJson& result);
// A pool whose clients track `phases` groups of warmup + measured broadcasts.
PoolConfig broadcast_pool_config(const Options& o, int phases);
// Posts warmup + count broadcasts with seq first_seq.. and waits for them to reach `expected` clients. The warmup
// broadcasts (the first ones after a pause run slow: cold caches, TCP state) are delivered and checked like the
// others but left out of the latencies, the completion times and deliveries/s.
BroadcastRun run_broadcasts(Pool& pool, HttpClient& http, const Options& o, int first_seq, int expected);

}  // namespace bench::scenario
