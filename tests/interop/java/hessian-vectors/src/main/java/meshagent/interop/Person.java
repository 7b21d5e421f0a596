package meshagent.interop;

import java.io.Serializable;
import java.math.BigDecimal;
import java.util.Date;
import java.util.List;
import java.util.Map;

/**
 * A POJO with one field of each kind that changes the bytes: primitives (written with
 * writeInt/writeLong/writeBoolean), java.lang boxes, and compound fields. hessian-lite's
 * UnsafeSerializer lists java.lang and primitive fields first, compound ones after, then
 * reverses the whole list: the class definition reads avatar, attrs, ..., age, name.
 */
public class Person implements Serializable {
    private static final long serialVersionUID = 1L;

    String name;
    int age;
    long id;
    Long boxedId;
    Double score;
    boolean active;
    Address address;
    List<Object> tags;
    Color color;
    BigDecimal balance;
    Date created;
    Person friend;
    Map<String, Object> attrs;
    byte[] avatar;

    public Person() {
    }
}
