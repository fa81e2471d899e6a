/**
 * Requests with their expected decisions, shared by the rule tests and the
 * search of logs for secrets.
 *
 * @module
 */

import { PASSWORD, TOKENS } from "./mastodon.ts";

/** Cases that hold in every schema variant: request, then "outcome method reason". */
export const COMMON_CASES: [string, string][] = [
  [`isuser:alice:example.org`, "accepted - ok"],
  [`isuser:alice:chat.example.org`, "accepted - ok"],
  [`isuser:ALICE:example.org`, "accepted - ok"],
  [`isuser:mixedcase:example.org`, "accepted - ok"],
  [`auth:mixedcase:example.org:${PASSWORD}`, "accepted password ok"],
  [`auth:alice:example.org:${PASSWORD}`, "accepted password ok"],
  [`auth:alice:example.org:wrong-Password-77`, "rejected password wrong-password"],
  [`auth:bob:example.org:${PASSWORD}`, "accepted password ok"],
  [`auth:carol:example.org:${PASSWORD}`, "accepted password ok"],
  [`isuser:nobody:example.org`, "rejected - unknown-user"],
  [`auth:nobody:example.org:${PASSWORD}`, "rejected password unknown-user"],
  [`isuser:alice:other.example`, "rejected - foreign-domain"],
  [`auth:alice:other.example:${PASSWORD}`, "rejected password foreign-domain"],
  [`isuser:unconfirmed:example.org`, "rejected - unconfirmed"],
  [`auth:unconfirmed:example.org:${PASSWORD}`, "rejected password unconfirmed"],
  [`isuser:pending:example.org`, "rejected - pending"],
  [`auth:pending:example.org:${PASSWORD}`, "rejected password pending"],
  [`isuser:disabled:example.org`, "rejected - disabled"],
  [`auth:disabled:example.org:${PASSWORD}`, "rejected password disabled"],
  [`isuser:suspended:example.org`, "rejected - suspended"],
  [`auth:suspended:example.org:${PASSWORD}`, "rejected password suspended"],
  [`auth:suspended:example.org:${TOKENS.suspendedValid}`, "rejected token suspended"],
  [`isuser:memorial:example.org`, "rejected - memorial"],
  [`auth:memorial:example.org:${PASSWORD}`, "rejected password memorial"],
  [`isuser:moved:example.org`, "rejected - moved"],
  [`auth:moved:example.org:${PASSWORD}`, "rejected password moved"],
  [`isuser:selfdeleted:example.org`, "rejected - deleted"],
  [`auth:selfdeleted:example.org:${PASSWORD}`, "rejected password deleted"],
  [`isuser:mastodon.internal:example.org`, "rejected - unknown-user"],
  [`auth:mastodon.internal:example.org:${PASSWORD}`, "rejected password unknown-user"],
  [`isuser:remoteonly:example.org`, "rejected - unknown-user"],
  [`isuser:external:example.org`, "accepted - ok"],
  [`auth:external:example.org:${PASSWORD}`, "rejected password external-account"],
  // Two-factor users: the password alone is refused, a token of theirs is accepted.
  [`isuser:totp:example.org`, "accepted - ok"],
  [`auth:totp:example.org:${PASSWORD}`, "rejected password two-factor-required"],
  [`auth:totp:example.org:wrong-Password-77`, "rejected password wrong-password"],
  [`auth:webauthn:example.org:${PASSWORD}`, "rejected password two-factor-required"],
  [`auth:totp:example.org:${TOKENS.totpValid}`, "accepted token ok"],
  [`auth:totp:example.org:${TOKENS.totpRevokedLater}`, "accepted token ok"],
  [`auth:totp:example.org:${TOKENS.totpExpiresLater}`, "accepted token ok"],
  [`auth:totp:example.org:${TOKENS.totpRevoked}`, "rejected token token-revoked"],
  [`auth:totp:example.org:${TOKENS.totpExpired}`, "rejected token token-expired"],
  [`auth:totp:example.org:${TOKENS.aliceValid}`, "rejected password wrong-password"],
  [`auth:totp:example.org:${TOKENS.appOnly}`, "rejected password wrong-password"],
  [`auth:alice:example.org:${TOKENS.aliceValid}`, "accepted token ok"],
  [`auth:nobody:example.org:${TOKENS.aliceValid}`, "rejected password unknown-user"],
  // Write commands never change anything.
  [`setpass:alice:example.org:new-password`, "rejected - read-only"],
  [`tryregister:newuser:example.org:new-password`, "rejected - read-only"],
  [`removeuser:alice:example.org`, "rejected - read-only"],
  [`removeuser3:alice:example.org:${PASSWORD}`, "rejected - read-only"],
  [`auth:alice:example.org`, "rejected - malformed-request"],
  [`hello`, "rejected - malformed-request"],
];
