import type { RunningBroker } from "../brokers/broker.js";
import type { LoadCase } from "../scenarios/measure-brokers.js";
import type { CrossCheck, ScenarioContext } from "../scenarios/scenario.js";
import { mosquittoClientsThroughput } from "./mosquitto-clients.js";
import { mqttBenchmarkThroughput } from "./mqtt-benchmark.js";

/**
 * Runs the independent tools against the broker just measured, in the same case: Mosquitto's
 * C clients (always available with the Debian package) and mqtt-benchmark when
 * bench/tools/install-mqtt-benchmark.sh could install it.
 *
 * Mosquitto's clients run at QoS 1 only: at QoS 0, `mosquitto_pub -l` has no window and no rate,
 * so ten of them flood the broker without bound. That measures overload, not throughput, and
 * it takes aedes 1.2 down (mqemitter 7.1 recurses once per queued message, "Maximum call stack
 * size exceeded"; stock aedes and Sluice alike): a job for the storm scenario, not for a
 * cross-check.
 */
export async function crossCheckThroughput(
  context: ScenarioContext,
  broker: RunningBroker,
  loadCase: LoadCase,
): Promise<CrossCheck[]> {
  const checks: CrossCheck[] = [];
  if (loadCase.qos > 0) {
    const clients = await mosquittoClientsThroughput(broker, loadCase, context.cleanup);
    context.log(
      `  cross-check ${clients.tool} on ${broker.name} qos${loadCase.qos} ${loadCase.payloadBytes}B: ${Math.round(clients.messagesPerSecond).toLocaleString("en-US")} msg/s (tool CPU ${clients.toolCpuPercent?.toFixed(0)}%)${clients.error ? ` (${clients.error})` : ""}`,
    );
    checks.push(clients);
  }
  const benchmark = await mqttBenchmarkThroughput(broker, {
    publishers: loadCase.publishers,
    qos: loadCase.qos,
    payloadBytes: loadCase.payloadBytes,
    countPerClient: context.options.quick ? 500 : 2_000,
  });
  if (benchmark) {
    context.log(
      `  cross-check mqtt-benchmark: ${Math.round(benchmark.messagesPerSecond).toLocaleString("en-US")} publishes/s`,
    );
    checks.push(benchmark);
  }
  return checks;
}
