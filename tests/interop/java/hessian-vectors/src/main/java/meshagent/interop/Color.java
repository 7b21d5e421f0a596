package meshagent.interop;

/** An enum: hessian-lite writes it as an object with one field, "name". */
public enum Color {
    RED,
    GREEN
}
