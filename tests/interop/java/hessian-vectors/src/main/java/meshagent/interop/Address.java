package meshagent.interop;

import java.io.Serializable;

/** A value object referenced from Person; shared between two people in one vector. */
public class Address implements Serializable {
    private static final long serialVersionUID = 1L;

    String city;
    String zip;

    public Address() {
    }

    Address(String city, String zip) {
        this.city = city;
        this.zip = zip;
    }
}
