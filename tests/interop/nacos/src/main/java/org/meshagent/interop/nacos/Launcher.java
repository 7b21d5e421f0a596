package org.meshagent.interop.nacos;

import com.alibaba.nacos.NacosServerBasicApplication;
import com.alibaba.nacos.NacosServerWebApplication;
import com.alibaba.nacos.core.listener.startup.NacosStartUp;
import com.alibaba.nacos.core.listener.startup.NacosStartUpManager;
import com.alibaba.nacos.sys.env.DeploymentType;
import com.alibaba.nacos.sys.env.EnvUtil;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * Starts a standalone Nacos server without its console: the core context (no web) and the
 * server web context (HTTP API + gRPC) as its child, which is what Nacos' own unpublished
 * NacosBootstrap does in "server" deployment mode. Every setting comes from system properties
 * or --key=value arguments given by the test fixture.
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) {
        System.setProperty("nacos.standalone", "true");
        System.setProperty("nacos.deployment.type", "server");
        EnvUtil.setDeploymentType(DeploymentType.SERVER);
        // the startup listeners read the current phase to know which context they are in
        NacosStartUpManager.start(NacosStartUp.CORE_START_UP_PHASE);
        ConfigurableApplicationContext core =
                new SpringApplicationBuilder(NacosServerBasicApplication.class)
                        .web(WebApplicationType.NONE)
                        .run(args);
        NacosStartUpManager.start(NacosStartUp.WEB_START_UP_PHASE);
        new SpringApplicationBuilder(NacosServerWebApplication.class).parent(core).run(args);
        // the fixture waits for this line (and then for the HTTP API) before using the server
        System.out.println("meshagent-nacos-launcher: started");
        System.out.flush();
    }
}
