package org.meshagent.interop.thrift;

import java.util.HashMap;
import java.util.Map;
import org.apache.thrift.TApplicationException;
import org.apache.thrift.TException;
import org.apache.thrift.TProcessor;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.protocol.TCompactProtocol;
import org.apache.thrift.protocol.TField;
import org.apache.thrift.protocol.TMessage;
import org.apache.thrift.protocol.TMessageType;
import org.apache.thrift.protocol.TProtocol;
import org.apache.thrift.protocol.TProtocolFactory;
import org.apache.thrift.protocol.TProtocolUtil;
import org.apache.thrift.protocol.TStruct;
import org.apache.thrift.protocol.TType;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.TTransportFactory;
import org.apache.thrift.transport.layered.TFramedTransport;

/**
 * A subset of the Echo service (tests/support/thrift/echo.thrift) in Apache Thrift Java:
 * ping, add, whoami and find (which throws the declared NotFound for "missing").
 *
 * <pre>
 *   server PORT ID binary|compact framed|buffered
 *   client PORT binary|compact framed|buffered CALLS
 * </pre>
 *
 * The client prints one line per answer ("whoami ID", "add N", "find NotFound MESSAGE CODE").
 */
public final class Main {
  public static void main(String[] args) throws Exception {
    boolean compact = args[args[0].equals("server") ? 3 : 2].equals("compact");
    boolean framed = args[args[0].equals("server") ? 4 : 3].equals("framed");
    TProtocolFactory protocols =
        compact ? new TCompactProtocol.Factory() : new TBinaryProtocol.Factory();
    int port = Integer.parseInt(args[1]);
    if (args[0].equals("server")) {
      serve(port, args[2], protocols, framed);
    } else {
      call(port, protocols, framed, Integer.parseInt(args[4]));
    }
  }

  static void serve(int port, String id, TProtocolFactory protocols, boolean framed)
      throws Exception {
    TServerSocket socket = new TServerSocket(port);
    TThreadPoolServer.Args serverArgs =
        new TThreadPoolServer.Args(socket)
            .processor(new EchoProcessor(id))
            .protocolFactory(protocols)
            .transportFactory(framed ? new TFramedTransport.Factory() : new TTransportFactory());
    System.out.println("thrift java server " + id + " on " + port);
    System.out.flush();
    new TThreadPoolServer(serverArgs).serve();
  }

  /** Reads an argument struct into field id -> value (strings, i32, i64; others skipped). */
  static Map<Short, Object> readArgs(TProtocol in) throws TException {
    Map<Short, Object> values = new HashMap<>();
    in.readStructBegin();
    while (true) {
      TField field = in.readFieldBegin();
      if (field.type == TType.STOP) {
        break;
      }
      switch (field.type) {
        case TType.STRING -> values.put(field.id, in.readString());
        case TType.I32 -> values.put(field.id, in.readI32());
        case TType.I64 -> values.put(field.id, in.readI64());
        default -> TProtocolUtil.skip(in, field.type);
      }
      in.readFieldEnd();
    }
    in.readStructEnd();
    return values;
  }

  static final class EchoProcessor implements TProcessor {
    private final String id;

    EchoProcessor(String id) {
      this.id = id;
    }

    @Override
    public void process(TProtocol in, TProtocol out) throws TException {
      TMessage call = in.readMessageBegin();
      Map<Short, Object> args = readArgs(in);
      in.readMessageEnd();
      if (call.type == TMessageType.ONEWAY) {
        return;
      }
      switch (call.name) {
        case "ping" -> reply(out, call, TType.STRING, "pong");
        case "whoami" -> reply(out, call, TType.STRING, id);
        case "add" -> reply(out, call, TType.I64, (Long) args.get((short) 1) + (Long) args.get((short) 2));
        case "find" -> {
          String name = (String) args.get((short) 1);
          if ("missing".equals(name)) {
            notFound(out, call, "no " + name, 404);
          } else {
            TApplicationException error =
                new TApplicationException(TApplicationException.INTERNAL_ERROR, "java peer finds nothing but missing");
            exception(out, call, error);
          }
        }
        default ->
            exception(
                out,
                call,
                new TApplicationException(
                    TApplicationException.UNKNOWN_METHOD, "unknown method " + call.name));
      }
      out.getTransport().flush();
    }

    private static void reply(TProtocol out, TMessage call, byte type, Object value)
        throws TException {
      out.writeMessageBegin(new TMessage(call.name, TMessageType.REPLY, call.seqid));
      out.writeStructBegin(new TStruct(call.name + "_result"));
      out.writeFieldBegin(new TField("success", type, (short) 0));
      if (type == TType.STRING) {
        out.writeString((String) value);
      } else {
        out.writeI64((Long) value);
      }
      out.writeFieldEnd();
      out.writeFieldStop();
      out.writeStructEnd();
      out.writeMessageEnd();
    }

    private static void notFound(TProtocol out, TMessage call, String message, int code)
        throws TException {
      out.writeMessageBegin(new TMessage(call.name, TMessageType.REPLY, call.seqid));
      out.writeStructBegin(new TStruct("find_result"));
      out.writeFieldBegin(new TField("missing", TType.STRUCT, (short) 1));
      out.writeStructBegin(new TStruct("NotFound"));
      out.writeFieldBegin(new TField("message", TType.STRING, (short) 1));
      out.writeString(message);
      out.writeFieldEnd();
      out.writeFieldBegin(new TField("code", TType.I32, (short) 2));
      out.writeI32(code);
      out.writeFieldEnd();
      out.writeFieldStop();
      out.writeStructEnd();
      out.writeFieldEnd();
      out.writeFieldStop();
      out.writeStructEnd();
      out.writeMessageEnd();
    }

    private static void exception(TProtocol out, TMessage call, TApplicationException error)
        throws TException {
      out.writeMessageBegin(new TMessage(call.name, TMessageType.EXCEPTION, call.seqid));
      error.write(out);
      out.writeMessageEnd();
    }
  }

  // -- the client ----------------------------------------------------------------------

  static void call(int port, TProtocolFactory protocols, boolean framed, int calls)
      throws Exception {
    TSocket socket = new TSocket("127.0.0.1", port, 5000);
    TTransport transport = framed ? new TFramedTransport(socket) : socket;
    transport.open();
    try {
      TProtocol protocol = protocols.getProtocol(transport);
      int seqid = 0;
      for (int i = 0; i < calls; i++) {
        send(protocol, "whoami", ++seqid, null, null);
        System.out.println("whoami " + receive(protocol, "whoami", seqid));
      }
      send(protocol, "add", ++seqid, 1L << 62, 5L);
      System.out.println("add " + receive(protocol, "add", seqid));
      send(protocol, "find", ++seqid, "missing", null);
      System.out.println("find " + receive(protocol, "find", seqid));
      // A method the provider does not have: the provider's TApplicationException, as is.
      send(protocol, "nosuch", ++seqid, null, null);
      System.out.println("nosuch " + receive(protocol, "nosuch", seqid));
    } finally {
      transport.close();
    }
  }

  static void send(TProtocol out, String method, int seqid, Object first, Object second)
      throws TException {
    out.writeMessageBegin(new TMessage(method, TMessageType.CALL, seqid));
    out.writeStructBegin(new TStruct(method + "_args"));
    if (first instanceof Long a) {
      out.writeFieldBegin(new TField("a", TType.I64, (short) 1));
      out.writeI64(a);
      out.writeFieldEnd();
      out.writeFieldBegin(new TField("b", TType.I64, (short) 2));
      out.writeI64((Long) second);
      out.writeFieldEnd();
    } else if (first instanceof String name) {
      out.writeFieldBegin(new TField("name", TType.STRING, (short) 1));
      out.writeString(name);
      out.writeFieldEnd();
    }
    out.writeFieldStop();
    out.writeStructEnd();
    out.writeMessageEnd();
    out.getTransport().flush();
  }

  static String receive(TProtocol in, String method, int seqid) throws TException {
    TMessage reply = in.readMessageBegin();
    if (reply.seqid != seqid || !reply.name.equals(method)) {
      throw new IllegalStateException(
          "reply " + reply.name + "#" + reply.seqid + " to " + method + "#" + seqid);
    }
    if (reply.type == TMessageType.EXCEPTION) {
      TApplicationException error = TApplicationException.readFrom(in);
      in.readMessageEnd();
      return "TApplicationException " + error.getType() + " " + error.getMessage();
    }
    String result = "";
    in.readStructBegin();
    while (true) {
      TField field = in.readFieldBegin();
      if (field.type == TType.STOP) {
        break;
      }
      if (field.id == 0 && field.type == TType.STRING) {
        result = in.readString();
      } else if (field.id == 0 && field.type == TType.I64) {
        result = Long.toString(in.readI64());
      } else if (field.id == 1 && field.type == TType.STRUCT) {
        Map<Short, Object> thrown = readArgs(in);
        result = "NotFound " + thrown.get((short) 1) + " " + thrown.get((short) 2);
      } else {
        TProtocolUtil.skip(in, field.type);
      }
      in.readFieldEnd();
    }
    in.readStructEnd();
    in.readMessageEnd();
    return result;
  }
}
