package org.meshagent.interop.api;

public enum Level {
    LOW,
    MEDIUM,
    HIGH
}
