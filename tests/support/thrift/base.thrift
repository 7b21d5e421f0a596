// The common Base/BaseResp convention (as in CloudWeGo Kitex's base.thrift): requests carry
// Base at field 255, responses BaseResp at field 255.
namespace java meshagent.thrift.base
namespace py base

struct Base {
    1: string LogID = "",
    2: string Caller = "",
    3: string Addr = "",
    4: string Client = "",
    6: optional map<string, string> Extra,
}

struct BaseResp {
    1: string StatusMessage = "",
    2: i32 StatusCode = 0,
    3: optional map<string, string> Extra,
}
