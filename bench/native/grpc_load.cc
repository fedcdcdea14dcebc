// A native gRPC load client for bench/grpc_floor.py: pre-serialized request bytes through a
// generic stub (no protos), so the figures are the server's and not a Python client's.
// usage: grpc_load TARGET METHOD REQUEST_FILE lat N | tput SECONDS CONCURRENCY
// lat: prints a JSON list of N per-call latencies in ns; tput: a JSON object of counts.
#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/generic_stub.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

static grpc::ByteBuffer make_buffer(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

static bool call_once(grpc::GenericStub& stub, grpc::CompletionQueue& cq, const std::string& method,
                      const grpc::ByteBuffer& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::ByteBuffer resp;
  grpc::Status status;
  auto rpc = stub.PrepareUnaryCall(&ctx, method, req, &cq);
  rpc->StartCall();
  rpc->Finish(&resp, &status, (void*)1);
  void* tag; bool ok;
  cq.Next(&tag, &ok);
  return ok && status.ok();
}

int main(int argc, char** argv) {
  if (argc < 6) { std::fprintf(stderr, "usage: grpc_load TARGET METHOD FILE lat|tput N [C]\n"); return 2; }
  std::string target = argv[1], method = argv[2], mode = argv[4];
  std::ifstream f(argv[3], std::ios::binary);
  std::stringstream ss; ss << f.rdbuf();
  std::string body = ss.str();
  double n = std::atof(argv[5]);
  int conc = argc > 6 ? std::atoi(argv[6]) : 1;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  if (mode == "lat") {
    auto ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    grpc::GenericStub stub(ch);
    grpc::CompletionQueue cq;
    grpc::ByteBuffer req = make_buffer(body);
    int errors = 0;
    std::printf("[");
    for (int i = 0; i < (int)n; ++i) {
      auto t0 = Clock::now();
      if (!call_once(stub, cq, method, req)) ++errors;
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
      std::printf(i ? ",%lld" : "%lld", (long long)ns);
    }
    std::printf("]\n");
    std::fprintf(stderr, "errors %d\n", errors);
    return errors ? 1 : 0;
  }
  std::atomic<long> done{0}, errors{0};
  auto until = Clock::now() + std::chrono::milliseconds((long)(n * 1000));
  std::vector<std::thread> threads;
  for (int t = 0; t < conc; ++t) {
    threads.emplace_back([&, t] {
      grpc::ChannelArguments a = args;
      a.SetInt("grpc.channel_id", t);  // one connection per client, like REST's keep-alive
      auto ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), a);
      grpc::GenericStub stub(ch);
      grpc::CompletionQueue cq;
      grpc::ByteBuffer req = make_buffer(body);
      while (Clock::now() < until) {
        if (call_once(stub, cq, method, req)) ++done; else ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  std::printf("{\"requests\": %ld, \"errors\": %ld, \"seconds\": %f}\n", done.load(), errors.load(), n);
  return 0;
}
