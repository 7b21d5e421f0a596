// The test service of the Thrift plugin: every Thrift type in one round trip.
namespace java meshagent.thrift
namespace py echo

include "base.thrift"

enum Color {
    RED = 1,
    GREEN = 2,
    BLUE = 3,
}

struct Point {
    1: i32 x,
    2: i32 y,
}

// One of its fields exactly (the agent refuses none or two).
union Shape {
    1: Point point,
    2: double radius,
    3: string label,
}

struct Item {
    1: required string name,
    2: optional i64 id,
    3: optional binary blob,
    4: optional list<i32> numbers,
    5: optional map<string, double> scores,
    6: optional set<string> tags,
    7: optional Color color,
    8: optional bool flag,
    9: optional list<Item> children,
    10: optional i16 small,
    11: optional byte tiny,
    12: optional map<i32, list<bool>> flags,
    // Keys JSON can only carry as text: booleans, structs.
    13: optional map<bool, string> switches,
    14: optional map<Point, string> places,
    15: optional double ratio,
    16: optional Shape shape,
}

exception NotFound {
    1: string message,
    2: i32 code,
}

service Echo {
    string ping(),
    Item echo(1: Item item),
    i64 add(1: i64 a, 2: i64 b),
    string slow(1: i32 ms),
    Item find(1: string name) throws (1: NotFound missing),
    string whoami(),
    oneway void record(1: string note),
    i32 recorded(),
    // What the caller's Base said (LogID, Caller and the Extra entries), for context tests.
    map<string, string> context(1: string note, 255: base.Base Base),
}
