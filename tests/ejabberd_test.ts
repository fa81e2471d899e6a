/**
 * A real ejabberd (Debian's 23.01) runs the program as its external
 * authentication program, and a real XMPP client (slixmpp) logs in over
 * STARTTLS with SASL PLAIN.
 */

import assert from "node:assert/strict";
import { ejabberdInstalled, prepareProgramCopy, TestEjabberd } from "./support/ejabberd.ts";
import { fixture } from "./support/hashes.ts";
import { createMastodonDatabase, PASSWORD, TOKENS, writeConfig } from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { assertNoSecrets, REPO_ROOT } from "./support/program.ts";

const INSTALL_HINT = "apt-get install -y ejabberd python3-slixmpp";
const available = ejabberdInstalled() && Deno.uid() === 0;
const required = Deno.env.get("CI") === "true";

if (!available && required) {
  Deno.test("ejabberd and slixmpp are installed in CI", () => {
    assert.fail(
      `CI=true but ejabberd or python3-slixmpp is missing, or the tests do not run as root: ${INSTALL_HINT}`,
    );
  });
}

Deno.test({
  name: available
    ? "ejabberd logs users in through the program"
    : `ejabberd logs users in through the program (skipped: ejabberd or python3-slixmpp ` +
      `is not installed or the tests do not run as root; ${INSTALL_HINT})`,
  ignore: !available,
  async fn() {
    const cluster = await TestCluster.start();
    const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "auth-mastodon-ejabberd-" });
    try {
      await createMastodonDatabase(cluster, "mastodon", "main");
      const program = await prepareProgramCopy(REPO_ROOT, folder);
      const logFile = `${folder}/auth-mastodon.log`;
      const configPath = await writeConfig(folder, cluster, "mastodon", {
        log: `level = info\nfile = ${logFile}`,
      });
      // ejabberd runs the program as its own user, which must read the file.
      await chownToEjabberd(configPath);

      await using server = await TestEjabberd.start({
        domain: "example.org",
        extauthProgram: `${program} -c ${configPath}`,
      });
      const login = (user: string, password: string | Uint8Array) =>
        server.login(`${user}@example.org`, password);

      assert.equal(await login("alice", PASSWORD), true, "valid account");
      assert.equal(await login("alice", "wrong-Password-77"), false, "wrong password");
      assert.equal(await login("suspended", PASSWORD), false, "suspended account");
      assert.equal(await login("Alice", PASSWORD), true, "user name in capitals");
      assert.equal(await login("colons", fixture("colons").password), true, "colons");
      assert.equal(await login("multibyte", fixture("multibyte").password), true, "UTF-8");
      assert.equal(await login("totp", PASSWORD), false, "two-factor user with a password");
      assert.equal(await login("totp", TOKENS.totpValid), true, "two-factor user with a token");

      // The replies came from decisions, not from a crashed program, which
      // ejabberd would also report to the client as a failed login.
      const log = await Deno.readTextFile(logFile);
      for (
        const pattern of [
          /accepted auth alice@example\.org method=password reason=ok/,
          /rejected auth alice@example\.org method=password reason=wrong-password/,
          /rejected auth suspended@example\.org method=password reason=suspended/,
          /accepted auth colons@example\.org method=password reason=ok/,
          /accepted auth multibyte@example\.org method=password reason=ok/,
          /rejected auth totp@example\.org method=password reason=two-factor-required/,
          /accepted auth totp@example\.org method=token reason=ok/,
        ]
      ) {
        assert.match(log, pattern);
      }
      assertNoSecrets(log, "the program's log");
      const serverLog = await server.logText();
      assert.doesNotMatch(serverLog, /Failed to start external authentication program/);
    } finally {
      await cluster.destroy();
      await Deno.remove(folder, { recursive: true });
    }
  },
});

async function chownToEjabberd(path: string): Promise<void> {
  const output = await new Deno.Command("chown", { args: ["ejabberd:ejabberd", path] }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
}
