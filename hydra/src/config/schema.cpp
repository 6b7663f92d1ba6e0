// hydra's built-in configuration schema. Kept as JSON text so it reads like the documentation it also is.
#include <hydra/config.h>

namespace hydra {
namespace {

constexpr const char* builtin_schema_text = R"json({
  "type": "object",
  "properties": {
    "log": {
      "type": "object",
      "description": "Process log output.",
      "properties": {
        "level": {"type": "string", "enum": ["trace", "debug", "info", "warn", "error"], "default": "info"},
        "format": {"type": "string", "enum": ["text", "json"], "default": "text"}
      }
    },
    "limits": {
      "type": "object",
      "description": "Limits on what is read from outside, whichever server reads it.",
      "properties": {
        "json_depth": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 64,
                       "description": "Deepest nesting of arrays/objects in JSON from outside (bodies, messages, queue payloads, answers of outbound calls); deeper is refused (HTTP 400, WS code 400)."}
      }
    },
    "api": {
      "type": "object",
      "description": "The HTTP API server.",
      "properties": {
        "enabled": {"type": "boolean", "default": true},
        "address": {"type": "string", "format": "address", "default": "127.0.0.1:9090"},
        "io_threads": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1,
                       "description": "Event loops reading and writing HTTP connections."},
        "io_uring": {"type": "boolean", "default": true,
                     "description": "Read the requests of one loop iteration from all their connections in one system call, and write the answers in another (io_uring), where the kernel allows it (else, or false: one recv/send per connection). TLS connections go through OpenSSL either way."},
        "threads": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 64,
                    "description": "Handler threads (a handler may block, e.g. on a durable queue push)."},
        "max_queued": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1024,
                       "description": "Requests waiting for a free handler thread; beyond that: 503."},
        "max_connections": {"type": "integer", "minimum": 1, "maximum": 10000000, "default": 10000,
                            "description": "Open HTTP connections; beyond that a new one gets 503 and is closed."},
        "max_connections_per_ip": {"type": "integer", "minimum": 0, "maximum": 10000000, "default": 256,
                                   "description": "Open HTTP connections from one client address (IPv6: its /64); beyond that a new one gets 503 and is closed. 0 = no limit."},
        "rate_limit": {
          "type": "object",
          "description": "Requests per client address (IPv6: its /64), a token bucket; beyond it: 429 with Retry-After.",
          "properties": {
            "requests_per_s": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 1000,
                               "description": "Sustained rate. 0 = no limit."},
            "burst": {"type": "integer", "minimum": 1, "maximum": 10000000, "default": 2000,
                      "description": "Requests allowed at once (the bucket's size)."}
          }
        },
        "max_pending_output": {"type": "integer", "minimum": 1024, "maximum": 1073741824, "default": 1048576,
                               "description": "Unsent response bytes of one connection; beyond that its pipelined requests are not read until the client takes its responses."},
        "max_body": {"type": "integer", "minimum": 0, "maximum": 1073741824, "default": 1048576,
                     "description": "Largest request body in bytes."},
        "keep_alive": {"type": "boolean", "default": true},
        "keep_alive_timeout_ms": {"type": "integer", "minimum": 0, "maximum": 3600000, "default": 15000},
        "header_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 3600000, "default": 10000,
                              "description": "A request's line and headers must arrive within this (408)."},
        "request_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 3600000, "default": 30000,
                               "description": "A request must arrive completely, and a response be read, within this."},
        "shutdown_timeout_ms": {"type": "integer", "minimum": 0, "maximum": 600000, "default": 10000}
      }
    },
    "shutdown": {
      "type": "object",
      "description": "The drain on SIGTERM/SIGINT: /readyz answers 503 at once; after grace_ms the API and WS listeners stop accepting, WebSocket clients are closed over ws.drain_ms, in-flight requests and MQC handlers finish (each bounded by api.shutdown_timeout_ms); a second signal ends it at once.",
      "properties": {
        "grace_ms": {"type": "integer", "minimum": 0, "maximum": 600000, "default": 5000,
                     "description": "How long the host keeps accepting after the signal, unready, so that load balancers notice."},
        "timeout_ms": {"type": "integer", "minimum": 0, "maximum": 3600000, "default": 25000,
                       "description": "Bound on the whole drain: whatever is still open then is closed at once (the process exits 0)."}
      }
    },
    "admin": {
      "type": "object",
      "description": "The operator's HTTP listener: the routes registered for it (the exchange's /v1/... endpoints), served like the API (the api.* limits and timeouts apply). Without auth.api_keys it binds only to loopback.",
      "properties": {
        "enabled": {"type": "boolean", "default": true},
        "address": {"type": "string", "format": "address", "default": "127.0.0.1:9091"},
        "threads": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 4,
                    "description": "Handler threads."},
        "metrics": {"type": "boolean", "default": true,
                    "description": "Serve Prometheus metrics at GET /metrics on this listener, and count them; false counts nothing."}
      }
    },
    "auth": {
      "type": "object",
      "description": "Who may call what: API keys for backends and operators, JSON Web Tokens for clients.",
      "properties": {
        "api_keys": {"type": "array", "items": {"type": "string", "minLength": 1, "secret": true}, "split": ",",
                     "default": [],
                     "description": "Keys for backend and operator calls (Authorization: apikey <key> or X-API-Key: <key>): required on every admin route and on routes registered with Auth::api_key (the demo's /msg/send, /msg/broadcast) when not empty. A string is split at commas (\"${HYDRA_API_KEYS}\")."},
        "jwt": {
          "type": "object",
          "description": "JSON Web Tokens (ws.auth=jwt, API routes with Auth::jwt, hydra token): HS256 with a secret, RS256/ES256 with a public key; exp and sub required.",
          "properties": {
            "secret": {"type": "string", "default": "", "secret": true,
                       "description": "HS256 key, at least 32 bytes; \"\" = HS256 tokens refused. Also signs hydra token."},
            "public_key_file": {"type": "string", "default": "",
                                "description": "PEM public key: RSA (RS256) or EC P-256 (ES256); \"\" = none."},
            "issuer": {"type": "string", "default": "", "description": "Required iss; \"\" = not checked."},
            "audience": {"type": "string", "default": "",
                         "description": "Required in aud (a string or an array); \"\" = not checked."},
            "leeway_s": {"type": "integer", "minimum": 0, "maximum": 3600, "default": 30,
                         "description": "Clock skew allowed on exp and nbf, in seconds."}
          }
        }
      }
    },
    "ws": {
      "type": "object",
      "description": "The WebSocket server.",
      "properties": {
        "enabled": {"type": "boolean", "default": true},
        "address": {"type": "string", "format": "address", "default": "127.0.0.1:9087"},
        "io_threads": {"type": "integer", "minimum": 0, "maximum": 64, "default": 0,
                       "description": "0 = number of cores."},
        "io_uring": {"type": "boolean", "default": true,
                     "description": "Write the frames of one loop iteration to all their connections in one system call (io_uring) where the kernel allows it (else, or false: one send per connection). TLS connections write through OpenSSL either way."},
        "workers": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 8},
        "max_message": {"type": "integer", "minimum": 125, "maximum": 1073741824, "default": 1048576},
        "max_connections": {"type": "integer", "minimum": 1, "maximum": 10000000, "default": 100000},
        "max_connections_per_ip": {"type": "integer", "minimum": 0, "maximum": 10000000, "default": 256,
                                   "description": "Open connections from one IPv4 address or IPv6 /64; beyond that a new one gets 503 and is closed. 0 = off (benchmarks, clients behind one proxy)."},
        "rate_limit": {
          "type": "object",
          "description": "Per connection: a token bucket over the messages and pings a client sends; a client over it is closed with 1008 \"rate limit\".",
          "properties": {
            "messages_per_s": {"type": "integer", "minimum": 0, "maximum": 10000000, "default": 1000,
                               "description": "Sustained rate. 0 = off (benchmarks that flood on purpose)."},
            "burst": {"type": "integer", "minimum": 1, "maximum": 100000000, "default": 2000,
                      "description": "Messages a connection may send at once (the bucket's size; full at the upgrade)."}
          }
        },
        "send_queue_bytes": {"type": "integer", "minimum": 1024, "maximum": 1073741824, "default": 4194304},
        "ping_interval_ms": {"type": "integer", "minimum": 0, "maximum": 3600000, "default": 30000,
                             "description": "0 = off."},
        "idle_timeout_ms": {"type": "integer", "minimum": 0, "maximum": 86400000, "default": 90000,
                            "description": "0 = off."},
        "handshake_timeout_ms": {"type": "integer", "minimum": 100, "maximum": 600000, "default": 10000},
        "drain_ms": {"type": "integer", "minimum": 0, "maximum": 600000, "default": 10000,
                     "description": "On SIGTERM/SIGINT, after shutdown.grace_ms: the open connections are closed with 1001 one after the other, spread evenly over this (their clients do not all reconnect at once). 0 = all at once."},
        "client_uuid": {"type": "string", "enum": ["generate", "resume", "request_id"], "default": "generate",
                        "description": "How a connection gets its uuid (its address for notify/send/kick): generate = a random one; resume = a random one, or the one of a token from an earlier 101 (X-Hydra-Resume header or ?resume=) that is not in use; request_id = the upgrade's X-Request-Id, trusted as is (only for trusted networks and benchmarks: any client can claim any uuid)."},
        "allowed_origins": {"type": "array", "default": [], "split": ",",
                            "items": {"type": "string", "pattern": "^(\\*|https?://(\\*\\.)?[A-Za-z0-9.:\\[\\]-]+)$"},
                            "description": "Browser origins that may open a WebSocket: exact (\"https://app.example.com\"), \"https://*.example.com\" (any subdomain) or \"*\"; an upgrade whose Origin is present and not listed gets 403. Empty = no check (dev). A string is split at commas (\"${HYDRA_ALLOWED_ORIGINS}\")."},
        "resume_secret": {"type": "string", "default": "", "secret": true,
                          "description": "HMAC-SHA256 key of resume tokens; \"\" = random at each start (tokens do not survive a restart). Hosts of a cluster share one to resume on another host."},
        "auth": {"type": "string", "enum": ["none", "jwt"], "default": "none",
                 "description": "jwt = an upgrade needs a valid token (auth.jwt) in Authorization: Bearer, ?token= or Sec-WebSocket-Protocol: bearer, <token>, else 401; the connection is bound to its sub and closed 1008 \"token expired\" at exp + leeway unless refreshed (service /auth/refresh on \"/\")."}
      }
    },
    "mqc": {
      "type": "object",
      "description": "HTTP routes whose requests are queued and consumed asynchronously.",
      "properties": {
        "enabled": {"type": "boolean", "default": true},
        "routes": {
          "type": "array",
          "default": [],
          "items": {
            "type": "object",
            "required": ["route", "queue"],
            "properties": {
              "route": {"type": "string", "pattern": "^/"},
              "queue": {"type": "string", "minLength": 1},
              "concurrency": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 1}
            }
          }
        }
      }
    },
    "queue": {
      "type": "object",
      "description": "The message queue backend.",
      "properties": {
        "backend": {"type": "string", "enum": ["sqlite", "kafka"], "default": "sqlite"},
        "push_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 600000, "default": 5000},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
        "retry_backoff_ms": {"type": "integer", "minimum": 0, "maximum": 3600000, "default": 1000},
        "sqlite": {
          "type": "object",
          "properties": {
            "path": {"type": "string", "minLength": 1, "default": "data/queue.db"},
            "synchronous": {"type": "string", "enum": ["normal", "full"], "default": "normal"},
            "busy_timeout_ms": {"type": "integer", "minimum": 0, "maximum": 600000, "default": 5000},
            "lease_ms": {"type": "integer", "minimum": 100, "maximum": 86400000, "default": 30000},
            "commit_delay_us": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 3000}
          }
        },
        "kafka": {
          "type": "object",
          "properties": {
            "brokers": {"type": "string", "default": "127.0.0.1:9092"},
            "group_prefix": {"type": "string", "default": ""},
            "properties": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                           "description": "librdkafka properties, e.g. \"linger.ms\", for every producer, consumer and admin client of the queue and the cluster; \"\" = unset. sasl.username and sasl.password go together."},
            "topics": {
              "type": "object",
              "description": "The queue topics (pushed, consumed and their \".dlq\"), created with the Admin API: those consumed at start, others at their first push; one that exists already is left as it is.",
              "properties": {
                "create": {"type": "boolean", "default": true,
                           "description": "false = the operator creates every topic (queues and cluster) himself."},
                "partitions": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 3},
                "replication_factor": {"type": "integer", "minimum": -1, "maximum": 32767, "default": -1,
                                       "description": "-1 = the brokers' default.replication.factor."},
                "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 600000, "default": 5000,
                               "description": "How long one creation request may take; at start a host waits at most this long for its topics, then goes on and retries in the background."}
              }
            }
          }
        }
      }
    },
    "cluster": {
      "type": "object",
      "properties": {
        "enabled": {"type": "boolean", "default": true,
                    "description": "With queue.backend=kafka, hosts sharing the brokers form a cluster."},
        "node_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{0,64}$", "default": "",
                    "description": "This host's id (its topic <plat>.<system>.node.<id> and consumer group); \"\" = the one in cluster.node_id_file."},
        "node_id_file": {"type": "string", "minLength": 1, "default": "data/node-id",
                         "description": "Where a host without cluster.node_id keeps the id it generated at its first start, so that a restart keeps its topic and group."},
        "node_ttl_s": {"type": "integer", "minimum": 60, "maximum": 31536000, "default": 86400,
                       "description": "hydra cluster gc deletes the node topics of hosts silent in the presence topic for this long."},
        "topics": {
          "type": "object",
          "description": "The presence topic (compacted), the bus and the node topics, created with the Admin API at start.",
          "properties": {
            "partitions": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1},
            "replication_factor": {"type": "integer", "minimum": -1, "maximum": 32767, "default": -1,
                                   "description": "-1 = the brokers' default.replication.factor."}
          }
        }
      }
    },
    "services": {
      "type": "object",
      "default": {},
      "description": "One sub-section per service; each service adds its own schema with ConfigSchema::add().",
      "properties": {}
    }
  }
})json";

// `api.tls`, `ws.tls`, `admin.tls`: the same object on each listener.
constexpr const char* tls_schema_text = R"json({
  "type": "object",
  "description": "TLS on this listener: TLS 1.2 and 1.3, ALPN http/1.1, OpenSSL's default ciphers. Both files or neither; re-read on SIGHUP (connections already open keep theirs).",
  "properties": {
    "cert_file": {"type": "string", "default": "",
                  "description": "The certificate, then its chain (PEM). \"\" = plain TCP."},
    "key_file": {"type": "string", "default": "",
                 "description": "Its private key (PEM, not encrypted)."},
    "handshake_timeout_ms": {"type": "integer", "minimum": 100, "maximum": 600000, "default": 10000,
                             "description": "A TLS handshake must be done within this, else the connection is dropped."}
  }
})json";

}  // namespace

ConfigSchema ConfigSchema::builtin() {
    // Parsed once: builtin() is called for every load and by every service that extends it.
    static const Json parsed = [] {
        Json root = Json::parse(builtin_schema_text);
        const Json tls = Json::parse(tls_schema_text);
        for (const char* listener : {"api", "ws", "admin"}) root["properties"][listener]["properties"]["tls"] = tls;
        return root;
    }();
    ConfigSchema schema;
    schema.root_ = parsed;
    return schema;
}

}  // namespace hydra
