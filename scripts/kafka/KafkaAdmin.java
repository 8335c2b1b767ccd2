import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The few admin requests scripts/kafka.sh needs, through Kafka's own Admin client (the
 * kafka-clients jar is already on the broker's classpath, so no CLI tools artifact is needed).
 *
 * <pre>
 * ready BOOTSTRAP NODES TIMEOUT_S             exit 0 once the cluster reports NODES brokers
 * create-topic BOOTSTRAP NAME PARTITIONS RF MIN_ISR [KEY=VALUE ...]
 *                                             an existing topic is fine: its KEY=VALUE topic
 *                                             configs are set to the given values
 * describe BOOTSTRAP TOPIC                    one line per partition: id leader replicas isr
 * topic-config BOOTSTRAP TOPIC KEY            the topic's value of config KEY
 * produce BOOTSTRAP TOPIC [KEY]               each line of standard input is one record
 * </pre>
 */
public final class KafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            usage();
        }
        String cmd = args[0];
        if (cmd.equals("produce")) {
            produce(args[1], args[2], args.length > 3 ? args[3] : null);
            return;
        }
        try (Admin admin = Admin.create(props(args[1]))) {
            switch (cmd) {
                case "ready" -> ready(admin, Integer.parseInt(args[2]), Long.parseLong(args[3]));
                case "create-topic" -> createTopic(admin, args[2], Integer.parseInt(args[3]),
                        Short.parseShort(args[4]), args[5], configs(args, 6), 60);
                case "describe" -> describe(admin, args[2]);
                case "topic-config" -> topicConfig(admin, args[2], args[3]);
                default -> usage();
            }
        }
    }

    private static void usage() {
        System.err.println("usage: KafkaAdmin ready|create-topic|describe|topic-config|produce BOOTSTRAP ...");
        System.exit(2);
    }

    private static Properties props(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        return p;
    }

    /** Polls DescribeCluster (a metadata request) until NODES brokers answer. */
    private static void ready(Admin admin, int nodes, long timeoutSecs) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSecs);
        String last = "no answer";
        while (System.nanoTime() < deadline) {
            try {
                Collection<Node> seen = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000))
                        .nodes().get(4, TimeUnit.SECONDS);
                if (seen.size() >= nodes) {
                    return;
                }
                last = seen.size() + " of " + nodes + " brokers registered";
            } catch (Exception e) {
                last = rootMessage(e);
            }
            Thread.sleep(200);
        }
        System.err.println("cluster not ready after " + timeoutSecs + " s: " + last);
        System.exit(1);
    }

    /** Creates a topic, retrying retriable errors (a cluster still electing its controller). */
    private static void createTopic(Admin admin, String name, int partitions, short rf, String minIsr,
            Map<String, String> extra, long timeoutSecs) throws Exception {
        Map<String, String> configs = new TreeMap<>(extra);
        configs.put("min.insync.replicas", minIsr);
        NewTopic topic = new NewTopic(name, partitions, rf).configs(configs);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSecs);
        while (true) {
            try {
                admin.createTopics(List.of(topic)).all().get(10, TimeUnit.SECONDS);
                System.err.println("created topic " + name + " (" + partitions + " partitions, replication "
                        + rf + ", " + configs + ")");
                return;
            } catch (ExecutionException e) {
                if (e.getCause() instanceof TopicExistsException) {
                    alignConfigs(admin, name, extra);
                    return;
                }
                if (!(e.getCause() instanceof RetriableException) || System.nanoTime() > deadline) {
                    System.err.println("could not create topic " + name + ": " + rootMessage(e));
                    System.exit(1);
                }
            } catch (Exception e) {
                if (System.nanoTime() > deadline) {
                    System.err.println("could not create topic " + name + ": " + rootMessage(e));
                    System.exit(1);
                }
            }
            Thread.sleep(300);
        }
    }

    /** KEY=VALUE arguments from index FROM on. */
    private static Map<String, String> configs(String[] args, int from) {
        Map<String, String> out = new TreeMap<>();
        for (int i = from; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("a topic config is KEY=VALUE, not " + args[i]);
                System.exit(2);
            }
            out.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        return out;
    }

    /** Sets an existing topic's configs to the given values (e.g. retention.ms after a change). */
    private static void alignConfigs(Admin admin, String name, Map<String, String> wanted) throws Exception {
        if (wanted.isEmpty()) {
            System.err.println("topic " + name + " exists");
            return;
        }
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, name);
        List<AlterConfigOp> ops = new ArrayList<>();
        wanted.forEach((k, v) -> ops.add(new AlterConfigOp(new ConfigEntry(k, v), AlterConfigOp.OpType.SET)));
        admin.incrementalAlterConfigs(Map.of(res, ops)).all().get(10, TimeUnit.SECONDS);
        System.err.println("topic " + name + " exists; set " + wanted);
    }

    private static void topicConfig(Admin admin, String name, String key) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, name);
        ConfigEntry e = admin.describeConfigs(List.of(res)).all().get(10, TimeUnit.SECONDS).get(res).get(key);
        if (e == null) {
            System.err.println("topic " + name + " has no config " + key);
            System.exit(1);
        }
        System.out.println(e.value());
    }

    private static void describe(Admin admin, String name) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(name)).allTopicNames().get(10, TimeUnit.SECONDS)
                .get(name);
        for (TopicPartitionInfo p : d.partitions()) {
            System.out.println(p.partition() + " leader=" + (p.leader() == null ? -1 : p.leader().id())
                    + " replicas=" + ids(p.replicas()) + " isr=" + ids(p.isr()));
        }
    }

    /** Produces each line of standard input (idempotent, acks=all) and waits for every ack. */
    private static void produce(String bootstrap, String topic, String key) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        int n = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p, new StringSerializer(),
                new StringSerializer());
                BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                acks.add(producer.send(new ProducerRecord<>(topic, key, line)));
            }
            for (Future<RecordMetadata> ack : acks) {
                ack.get();
                n++;
            }
        }
        System.err.println("produced " + n + " record(s) to " + topic);
    }

    private static String ids(List<Node> nodes) {
        StringBuilder sb = new StringBuilder();
        for (Node n : nodes) {
            if (sb.length() > 0) {
                sb.append(',');
            }
            sb.append(n.id());
        }
        return sb.toString();
    }

    private static String rootMessage(Throwable e) {
        Throwable t = e;
        while (t.getCause() != null) {
            t = t.getCause();
        }
        return t.getClass().getSimpleName() + ": " + t.getMessage();
    }
}
