// Runs the real `hydra` binary as a child process for black-box tests: captured output, signals, exit status.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test {

class ChildProcess {
  public:
    explicit ChildProcess(std::vector<std::string> args, const std::string& cwd = {}) {
        int out[2], err[2];
        if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
        // Everything the child needs is built before fork(): between fork and exec the child of a multithreaded
        // process may only make async-signal-safe calls. An allocation there can wait forever on an allocator lock
        // another thread of the test (a server it runs, the sanitizer's) held at the fork — a child that never
        // starts, seen as "hydra did not start" after the whole timeout.
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        const char* dir = cwd.empty() ? nullptr : cwd.c_str();
        pid_ = fork();
        if (pid_ < 0) throw std::runtime_error("fork");
        if (pid_ == 0) {
            dup2(out[1], 1);
            dup2(err[1], 2);
            if (dir != nullptr && chdir(dir) != 0) _exit(127);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(out[1]);
        close(err[1]);
        out_ = out[0];
        err_ = err[0];
    }
    ChildProcess(const ChildProcess&) = delete;
    ~ChildProcess() {
        if (pid_ > 0 && !status_) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        close(out_);
        close(err_);
    }

    pid_t pid() const { return pid_; }
    // Not once it was waited for: the pid may belong to another process by then.
    void signal(int sig) {
        if (pid_ > 0 && !status_) kill(pid_, sig);
    }

    // Reads stdout until `pattern` matches (returns the first capture group) or the timeout passes.
    std::optional<std::string> wait_for_stdout(const std::string& pattern, std::chrono::milliseconds timeout) {
        return wait_for(stdout_, pattern, timeout);
    }
    std::optional<std::string> wait_for_stderr(const std::string& pattern, std::chrono::milliseconds timeout) {
        return wait_for(stderr_, pattern, timeout);
    }

    // Waits for exit; returns the exit status, or -signal if killed, or nullopt on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!status_) {
            int st = 0;
            pid_t r = waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
                break;
            }
            if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
            pump(20);
        }
        pump(0);
        return status_;
    }

    const std::string& out() {
        pump(0);
        return stdout_;
    }
    const std::string& err() {
        pump(0);
        return stderr_;
    }

  private:
    std::optional<std::string> wait_for(const std::string& text, const std::string& pattern,
                                        std::chrono::milliseconds timeout) {
        std::regex re(pattern);
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            std::smatch m;
            if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
            pump(50);
        }
        return std::nullopt;
    }

    // Reads whatever the pipes hold (waiting up to `timeout_ms` for the first bytes), not one buffer's worth: a
    // child that wrote a lot and exited must be read to the end. Bounded (4 MiB a call) so that a child that never
    // stops writing cannot keep the caller here.
    void pump(int timeout_ms) {
        char buf[16384];
        for (int round = 0; round < 256; ++round) {
            pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
            if (poll(fds, 2, timeout_ms) <= 0) return;
            timeout_ms = 0;
            bool got = false;
            for (int i = 0; i < 2; ++i) {
                if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
                ssize_t n = read(fds[i].fd, buf, sizeof buf);
                if (n > 0) {
                    (i == 0 ? stdout_ : stderr_).append(buf, static_cast<std::size_t>(n));
                    got = true;
                }
            }
            if (!got) return;  // end of file on what was ready
        }
    }

    pid_t pid_ = -1;
    int out_ = -1, err_ = -1;
    std::string stdout_, stderr_;
    std::optional<int> status_;
};

}  // namespace test
