/** scripts/agent-env.js: what the installed agent's wrapper sets for glibc. */
export declare const AGENT_TUNABLES: string;
