// IoBatch (net/io_batch.h): many sockets' reads or writes in one system call (io_uring), or one recv(2) or
// sendmsg(2) each, with the same results either way: bytes read or written, 0 for a closed peer, -EAGAIN for an
// empty or full socket, -errno for a gone peer. Real loopback TCP.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "net/io_batch.h"

using hydra::IoBatch;

namespace {

// A connected pair of loopback TCP sockets: `server` nonblocking (written through the batch), `client` read here.
struct Pair {
    int server = -1;
    int client = -1;
    ~Pair() {
        if (server >= 0) close(server);
        if (client >= 0) close(client);
    }
};

std::vector<Pair> pairs(int n) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_REQUIRE(listen(listener, n) == 0);
    socklen_t len = sizeof a;
    getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    std::vector<Pair> out(static_cast<std::size_t>(n));
    for (auto& p : out) {
        p.client = socket(AF_INET, SOCK_STREAM, 0);
        BOOST_REQUIRE(connect(p.client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        p.server = accept(listener, nullptr, nullptr);
        BOOST_REQUIRE(p.server >= 0);
        fcntl(p.server, F_SETFL, O_NONBLOCK);
    }
    close(listener);
    return out;
}

// Reads exactly `size` bytes (blocking) from fd.
std::string read_exactly(int fd, std::size_t size) {
    std::string s(size, '\0');
    std::size_t got = 0;
    while (got < size) {
        ssize_t n = recv(fd, s.data() + got, size - got, 0);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    s.resize(got);
    return s;
}

// Whether this kernel lets this process make a ring at all (else IoBatch must fall back, and says so).
bool kernel_allows_io_uring() {
    io_uring ring{};
    if (io_uring_queue_init(2, &ring, 0) != 0) return false;
    io_uring_queue_exit(&ring);
    return true;
}

std::vector<std::pair<std::uint64_t, ssize_t>> run(IoBatch& batch) {
    std::vector<std::pair<std::uint64_t, ssize_t>> results;
    batch.run([&](std::uint64_t tag, ssize_t result) { results.emplace_back(tag, result); });
    return results;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(io_batch)

BOOST_AUTO_TEST_CASE(uses_io_uring_when_asked_and_the_kernel_allows_it) {
    BOOST_TEST(IoBatch(true).uses_io_uring() == kernel_allows_io_uring());
    BOOST_TEST(!IoBatch(false).uses_io_uring());
}

// More sends than the ring holds (256 per system call): every one arrives, whole, on its own socket, and the
// results come in the order added, with their tags.
BOOST_AUTO_TEST_CASE(every_send_arrives_on_its_socket_in_either_mode) {
    for (bool io_uring : {true, false}) {
        BOOST_TEST_CONTEXT("io_uring " << io_uring) {
            auto ps = pairs(300);
            IoBatch batch(io_uring);
            std::vector<std::string> texts;
            for (std::size_t i = 0; i < ps.size(); ++i) texts.push_back("frame " + std::to_string(i) + " to socket");
            for (std::size_t i = 0; i < ps.size(); ++i) {
                iovec v{texts[i].data(), texts[i].size()};
                batch.add_send(ps[i].server, &v, 1, 1000 + i);
            }
            BOOST_TEST(!batch.empty());
            auto results = run(batch);
            BOOST_TEST(batch.empty());
            BOOST_REQUIRE_EQUAL(results.size(), ps.size());
            for (std::size_t i = 0; i < ps.size(); ++i) {
                BOOST_TEST(results[i].first == 1000 + i);
                BOOST_TEST(results[i].second == static_cast<ssize_t>(texts[i].size()));
                BOOST_TEST(read_exactly(ps[i].client, texts[i].size()) == texts[i]);
            }
            // The batch is empty again: a second round works the same.
            std::string again = "again";
            iovec v{again.data(), again.size()};
            batch.add_send(ps[7].server, &v, 1, 7);
            results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 1U);
            BOOST_TEST(results[0].second == 5);
            BOOST_TEST(read_exactly(ps[7].client, 5) == "again");
        }
    }
}

BOOST_AUTO_TEST_CASE(several_buffers_go_as_one_write_in_order) {
    for (bool io_uring : {true, false}) {
        BOOST_TEST_CONTEXT("io_uring " << io_uring) {
            auto ps = pairs(2);
            IoBatch batch(io_uring);
            std::vector<std::string> parts = {"one,", "two,", "three"};
            std::vector<iovec> iov;
            for (auto& p : parts) iov.push_back({p.data(), p.size()});
            batch.add_send(ps[0].server, iov.data(), static_cast<int>(iov.size()), 1);
            std::string single = "single";
            iovec v{single.data(), single.size()};
            batch.add_send(ps[1].server, &v, 1, 2);
            auto results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 2U);
            BOOST_TEST(results[0].second == 13);
            BOOST_TEST(results[1].second == 6);
            BOOST_TEST(read_exactly(ps[0].client, 13) == "one,two,three");
            BOOST_TEST(read_exactly(ps[1].client, 6) == "single");
        }
    }
}

// A socket whose buffer is full answers -EAGAIN at once (the batch never waits for it); a peer that is gone answers
// an error (and no SIGPIPE kills the process); the sends around them are not held back.
BOOST_AUTO_TEST_CASE(a_full_socket_and_a_gone_peer_do_not_hold_back_the_others) {
    for (bool io_uring : {true, false}) {
        BOOST_TEST_CONTEXT("io_uring " << io_uring) {
            auto ps = pairs(4);
            std::string big(1 << 20, 'x');
            while (send(ps[1].server, big.data(), big.size(), MSG_DONTWAIT) > 0) {
            }
            close(ps[2].client);
            ps[2].client = -1;
            // The reset of the closed socket comes back after the first write after its close.
            std::string probe = "p";
            for (int i = 0; i < 100 && send(ps[2].server, probe.data(), 1, MSG_DONTWAIT | MSG_NOSIGNAL) > 0; ++i)
                usleep(1000);
            IoBatch batch(io_uring);
            std::vector<std::string> texts = {"first", "to a full socket", "to a gone peer", "last"};
            for (std::size_t i = 0; i < ps.size(); ++i) {
                iovec v{texts[i].data(), texts[i].size()};
                batch.add_send(ps[i].server, &v, 1, i);
            }
            auto results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 4U);
            BOOST_TEST(results[0].second == 5);
            BOOST_TEST(results[1].second == -EAGAIN);
            BOOST_TEST((results[2].second == -EPIPE || results[2].second == -ECONNRESET));
            BOOST_TEST(results[3].second == 4);
            BOOST_TEST(read_exactly(ps[0].client, 5) == "first");
            BOOST_TEST(read_exactly(ps[3].client, 4) == "last");
        }
    }
}

BOOST_AUTO_TEST_CASE(a_bad_descriptor_is_an_error_of_its_own_send) {
    for (bool io_uring : {true, false}) {
        BOOST_TEST_CONTEXT("io_uring " << io_uring) {
            auto ps = pairs(1);
            IoBatch batch(io_uring);
            std::string a = "a", b = "b";
            iovec va{a.data(), 1}, vb{b.data(), 1};
            batch.add_send(-1, &va, 1, 1);
            batch.add_send(ps[0].server, &vb, 1, 2);
            auto results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 2U);
            BOOST_TEST(results[0].second == -EBADF);
            BOOST_TEST(results[1].second == 1);
            BOOST_TEST(read_exactly(ps[0].client, 1) == "b");
        }
    }
}

// Reads: what each socket holds, into each read's own buffer; an empty socket answers -EAGAIN at once, a closed
// peer 0, a read shorter than what waits leaves the rest for the next.
BOOST_AUTO_TEST_CASE(reads_take_what_each_socket_holds) {
    for (bool io_uring : {true, false}) {
        BOOST_TEST_CONTEXT("io_uring " << io_uring) {
            auto ps = pairs(300);
            std::vector<std::string> texts;
            for (std::size_t i = 0; i < ps.size(); ++i) {
                texts.push_back("request " + std::to_string(i));
                if (i % 3 == 1) continue;  // nothing sent: empty
                BOOST_REQUIRE(send(ps[i].client, texts[i].data(), texts[i].size(), 0) ==
                              static_cast<ssize_t>(texts[i].size()));
            }
            shutdown(ps[2].client, SHUT_WR);  // its text, then the end
            shutdown(ps[5].client, SHUT_WR);
            // Each socket's bytes are there (loopback delivers within the send).
            IoBatch batch(io_uring);
            std::vector<std::string> buffers(ps.size(), std::string(64, '\0'));
            for (std::size_t i = 0; i < ps.size(); ++i) batch.add_recv(ps[i].server, buffers[i].data(), 64, i);
            auto results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), ps.size());
            for (std::size_t i = 0; i < ps.size(); ++i) {
                BOOST_TEST(results[i].first == i);
                if (i % 3 == 1) {
                    BOOST_TEST(results[i].second == -EAGAIN);
                } else {
                    BOOST_REQUIRE(results[i].second == static_cast<ssize_t>(texts[i].size()));
                    BOOST_TEST(buffers[i].substr(0, texts[i].size()) == texts[i]);
                }
            }
            // Then: the end of the two that shut down, nothing yet on the others; a short buffer takes a part.
            const std::string more = "0123456789";
            send(ps[0].client, more.data(), more.size(), 0);
            char part[4];
            char end[8];
            batch.add_recv(ps[0].server, part, sizeof part, 0);
            batch.add_recv(ps[2].server, end, sizeof end, 2);
            batch.add_recv(ps[3].server, end, sizeof end, 3);
            results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 3U);
            BOOST_TEST(results[0].second == 4);
            BOOST_TEST(std::string(part, 4) == "0123");
            BOOST_TEST(results[1].second == 0);
            BOOST_TEST(results[2].second == -EAGAIN);
            batch.add_recv(ps[0].server, end, sizeof end, 0);
            results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 1U);
            BOOST_TEST(results[0].second == 6);
            BOOST_TEST(std::string(end, 6) == "456789");
        }
    }
}

// Reads and writes in one run: each to its own socket, results in the order added.
BOOST_AUTO_TEST_CASE(reads_and_writes_mix_in_one_run) {
    for (bool io_uring : {true, false}) {
        BOOST_TEST_CONTEXT("io_uring " << io_uring) {
            auto ps = pairs(2);
            const std::string question = "question", answer = "answer";
            send(ps[0].client, question.data(), question.size(), 0);
            IoBatch batch(io_uring);
            char buf[32];
            iovec v{const_cast<char*>(answer.data()), answer.size()};
            batch.add_recv(ps[0].server, buf, sizeof buf, 10);
            batch.add_send(ps[1].server, &v, 1, 20);
            auto results = run(batch);
            BOOST_REQUIRE_EQUAL(results.size(), 2U);
            BOOST_TEST(results[0].first == 10U);
            BOOST_TEST(results[0].second == 8);
            BOOST_TEST(std::string(buf, 8) == question);
            BOOST_TEST(results[1].first == 20U);
            BOOST_TEST(results[1].second == 6);
            BOOST_TEST(read_exactly(ps[1].client, 6) == answer);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
