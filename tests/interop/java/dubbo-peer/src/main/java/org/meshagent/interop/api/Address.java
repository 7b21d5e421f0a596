package org.meshagent.interop.api;

import java.io.Serializable;
import java.util.Objects;

public class Address implements Serializable {
    private static final long serialVersionUID = 1L;

    private String street;
    private String city;
    private int zip;

    public Address() {
    }

    public Address(String street, String city, int zip) {
        this.street = street;
        this.city = city;
        this.zip = zip;
    }

    public String getStreet() { return street; }
    public void setStreet(String street) { this.street = street; }
    public String getCity() { return city; }
    public void setCity(String city) { this.city = city; }
    public int getZip() { return zip; }
    public void setZip(int zip) { this.zip = zip; }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof Address a)) return false;
        return zip == a.zip && Objects.equals(street, a.street) && Objects.equals(city, a.city);
    }

    @Override
    public int hashCode() { return Objects.hash(street, city, zip); }

    @Override
    public String toString() { return "Address{" + street + ", " + city + ", " + zip + "}"; }
}
