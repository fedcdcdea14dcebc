// A native async generic gRPC server that answers every call with its request bytes: the
// floor of gRPC itself on this machine (bench/grpc_floor.py). Prints its port, serves forever.
#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/async_generic_service.h>
#include <cstdio>
int main() {
  grpc::AsyncGenericService svc;
  grpc::ServerBuilder b; int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterAsyncGenericService(&svc);
  auto cq = b.AddCompletionQueue();
  auto server = b.BuildAndStart();
  std::printf("%d\n", port); std::fflush(stdout);
  while (true) {
    grpc::GenericServerContext ctx;
    grpc::GenericServerAsyncReaderWriter stream(&ctx);
    void* tag; bool ok;
    svc.RequestCall(&ctx, &stream, cq.get(), cq.get(), (void*)1);
    cq->Next(&tag, &ok);
    grpc::ByteBuffer buf;
    stream.Read(&buf, (void*)2); cq->Next(&tag, &ok);
    stream.WriteAndFinish(buf, grpc::WriteOptions(), grpc::Status::OK, (void*)3); cq->Next(&tag, &ok);
  }
}
