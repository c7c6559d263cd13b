// ESLint (typescript-eslint, type-aware) over the TypeScript of the agent, the tests and the
// benchmarks, and the plain JavaScript of bin/ and scripts/: npm run lint, part of npm test.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'run/', '.deb-test-*/', '.stryker-tmp/', 'reports/'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Escaping control characters out of client and file text is the point of those expressions.
      'no-control-regex': 'off',
      // fast-check's async commands and prom-client's collectors take async functions whether or
      // not a given one awaits; a missing await that matters is what no-floating-promises catches.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // The C and node-ipc boundaries: koffi's calls return what C returns (typed any), and node-ipc
    // ships no types. Each value is checked where it leaves these files.
    files: ['agent/kernel/ffi.ts', 'agent/kernel/sys.ts', 'agent/kernel/unixsock.ts', 'config/nss.ts', 'agent/wire/server.ts', 'bench/echo-server.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  {
    files: ['bin/**/*.js', 'scripts/**/*.js', 'eslint.config.js'],
    // A property left out of a copy by destructuring ({ replaced: _, ...rest }) is not an unused variable.
    rules: { 'no-unused-vars': ['error', { ignoreRestSiblings: true }] },
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly' } },
  },
  { files: ['scripts/**/*.cjs'], languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable' } } },
  {
    files: ['test/helpers/reporter.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', process: 'readonly', setImmediate: 'readonly' } },
  },
);
