package org.meshagent.interop.api;

/** A checked, declared exception: hessian2 carries it back as a RESPONSE_WITH_EXCEPTION. */
public class GreetingException extends Exception {
    private static final long serialVersionUID = 1L;

    public GreetingException() {
        super();
    }

    public GreetingException(String message) {
        super(message);
    }
}
