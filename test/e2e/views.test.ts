// Views on real filesystems (the root filesystem, tmpfs, FUSE): ids through every mode, writes
// landing with the right on-disk ids, squash, the fstab route, the owner's view without root.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as P from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, usernsctl, USERNSCTL, usernsctlAt } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree, populateBackup as populate } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser, mountsUnder } from '../helpers/kernel.ts';

/** The context's host range: on-disk u is host B + u. */
const B = 6_100_000;
const OVERFLOW = 65534;
const hasBindfs = spawnSync('bindfs', ['--version']).status === 0;

const ids = (path: string) => {
  const st = statSync(path);
  return `${st.uid}:${st.gid}`;
};
const as = (uid: number, cmd: string[]) => spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', ...cmd], { encoding: 'utf8' });
const umount = (dst: string) => spawnSync('umount', [dst], { encoding: 'utf8' });

describe("e2e: views of a context's tree (root)", function () {
  this.timeout(120_000);
  let tree: Tree;
  let agent: RunningAgent;
  let owner: ReturnType<typeof makeUser>;
  let stranger: ReturnType<typeof makeUser>;
  let restoreModes: () => void = () => {};
  const src: Record<string, string> = {};
  const ctl = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctlAt(agent.socket, args, opts);
  let n = 0;
  const dst = () => {
    const d = join(tree.dir, `dst${++n}`);
    mkdirSync(d);
    chmodSync(d, 0o755);
    return d;
  };

  before(async function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    owner = makeUser();
    stranger = makeUser();
    tree = makeTree();
    tree.delegate(owner.name, B, 65536);
    tree.context('hpa-backups.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\n[squash]\nmode = root\n`);
    tree.context(
      'tape-all.conf',
      `[context]\nuid_map = 0 ${B + 65536} 65536\ngid_map = 0 ${B + 65536} 65536\n[squash]\nmode = all\nanonuid = 65533\nanongid = 65533\n`,
    );
    tree.context('www.conf', `[context]\nparent = hpa-backups\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n[squash]\nmode = none\n`);
    tree.context('plain.conf', `[context]\nuid_map = 0 ${B + 131072} 65536\ngid_map = 0 ${B + 131072} 65536\n[squash]\nmode = none\n`);
    src.rootfs = join(tree.dir, 'rootfs');
    populate(src.rootfs);
    // The same backup without a label: root names its context with --context (a label would win).
    src.bare = join(tree.dir, 'bare');
    populate(src.bare);
    // A backup of the all-squash context, labelled as such.
    src.tape = join(tree.dir, 'tape');
    populate(src.tape);
    // Sealed as /var/lib/machines is: only root may search the directory above the backup (SPEC §12).
    mkdirSync(join(tree.dir, 'sealed'), { mode: 0o700 });
    chmodSync(join(tree.dir, 'sealed'), 0o700);
    src.sealed = join(tree.dir, 'sealed', 'backup');
    populate(src.sealed);
    src.tmpfs = join(tree.dir, 'tmpfs');
    mkdirSync(src.tmpfs);
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'usernsd-test', src.tmpfs]).status, 0);
    populate(src.tmpfs);
    if (hasBindfs) {
      // FUSE: the kernel cannot idmap it. A plain bindfs mirror shows the backup's raw ids.
      const under = join(tree.dir, 'fuse-under');
      populate(under);
      src.fuse = join(tree.dir, 'fuse');
      mkdirSync(src.fuse);
      assert.equal(spawnSync('bindfs', [under, src.fuse]).status, 0);
    }
    agent = await startAgent(tree);
    for (const dir of [src.rootfs, src.tmpfs, src.sealed]) assert.equal((await ctl(['label', 'set', dir, 'hpa-backups', '--config', tree.config])).code, 0);
    assert.equal((await ctl(['label', 'set', src.tape, 'tape-all', '--config', tree.config])).code, 0);
  });

  after(async () => {
    await cleanup(tree); // unmounts every view, the tmpfs and the FUSE source (bindfs then exits)
    owner?.remove();
    stranger?.remove();
    restoreModes();
  });

  /** What each on-disk owner shows as, through a view of that mode. */
  const expected = (mode: 'identity' | 'foreign', mechanism: string) => ({
    root: mode === 'identity' ? `${B}:${B}` : `${OVERFLOW}:${OVERFLOW}`,
    hpa: `${B + 1000}:${B + 1000}`,
    // bindfs shifts every id by one offset: an id past the range shows shifted too (its views are read-only).
    alien: mechanism === 'bindfs' ? `${B + 70000}:${B + 70000}` : `${OVERFLOW}:${OVERFLOW}`,
  });

  for (const kind of ['rootfs', 'tmpfs', 'fuse'] as const) {
    for (const mode of ['identity', 'foreign'] as const) {
      it(`${kind}, ${mode}: every file shows with the ids userns.d(5) gives that mode`, async function () {
        if (!src[kind]) this.skip(); // FUSE needs bindfs (apt-get install bindfs; .ci/run installs it)
        const d = dst();
        const r = await ctl(['--json', 'view', `--${mode}`, '--context', 'hpa-backups', src[kind], d]);
        if (kind === 'fuse' && mode === 'foreign') {
          // Root squash cuts on-disk 0 out of the map: bindfs's one offset cannot say that.
          assert.equal(r.code, 1, r.out);
          assert.match(r.err, /E_UNSUPPORTED: the kernel cannot idmap the filesystem of .*bindfs cannot show this view either.*root squash/);
          assert.deepEqual(mountsUnder(d), [], 'nothing mounted');
          return;
        }
        assert.equal(r.code, 0, r.err);
        const v = JSON.parse(r.out) as P.ViewResult;
        assert.equal(v.mechanism, kind === 'fuse' ? 'bindfs' : 'idmapped');
        for (const [name, want] of Object.entries(expected(mode, v.mechanism))) assert.equal(ids(join(d, name)), want, `${name} through ${mode} on ${kind}`);
        assert.equal(umount(d).status, 0);
        assert.deepEqual(mountsUnder(d), []);
      });
    }
  }

  for (const kind of ['rootfs', 'tmpfs'] as const) {
    for (const mode of ['identity', 'foreign'] as const) {
      it(`${kind}, ${mode}: a file created through the view is on disk the creator's host id less the range's start, or is refused; never an id the creator could not reach`, async () => {
        const d = dst();
        assert.equal((await ctl(['view', `--${mode}`, src[kind], d])).code, 0);
        for (const uid of [0, B, B + 1000, B + 65535, 1000, 65534, B + 65536]) {
          const file = `by-${uid}-${mode}`;
          const r = as(uid, ['touch', join(d, 'pub', file)]);
          const onDisk = uid - B;
          const mapped = onDisk >= (mode === 'foreign' ? 1 : 0) && onDisk < 65536;
          if (mapped) {
            assert.equal(r.status, 0, `uid ${uid}: ${r.stderr}`);
            assert.equal(ids(join(src[kind], 'pub', file)), `${onDisk}:${onDisk}`, `uid ${uid} created on-disk ${onDisk}`);
          } else {
            assert.notEqual(r.status, 0, `uid ${uid} must not create a file through the view (on-disk ${onDisk} is not in the view)`);
            assert.match(r.stderr, /Value too large|Permission denied/);
            assert.ok(!existsSync(join(src[kind], 'pub', file)));
          }
        }
        // Root cannot hand a file to on-disk 0 through a foreign view; a non-root owner cannot chown at all.
        const target = join(d, 'pub', `by-${B + 1000}-${mode}`);
        const chownRoot = spawnSync('chown', [`${B}:${B}`, target], { encoding: 'utf8' });
        if (mode === 'foreign') assert.match(chownRoot.stderr, /Value too large/, 'host root cannot chown to on-disk 0 through a foreign view');
        else assert.equal(chownRoot.status, 0);
        assert.notEqual(as(B + 1000, ['chown', `${B + 1001}`, join(d, 'pub', `by-${B + 1000}-${mode}`)]).status, 0);
        // The kernel writes no inode whose owner the view does not map: not even a world-writable one.
        assert.match(as(B + 1000, ['sh', '-c', `echo x >> ${join(d, 'alien')}`]).stderr, /Permission denied/);
        assert.equal(readFileSync(join(src[kind], 'alien'), 'utf8'), 'alien');
        if (mode === 'foreign') {
          const zero = readdirSync(join(src[kind], 'pub')).filter((f) => f.endsWith('-foreign') && statSync(join(src[kind], 'pub', f)).uid === 0);
          assert.deepEqual(zero, [], 'no on-disk 0 file came through the foreign view');
        }
        assert.equal(umount(d).status, 0);
      });
    }
  }

  it('all squash: bindfs shows every file as anonuid:anongid, read-only', async function () {
    if (!hasBindfs) this.skip();
    const d = dst();
    const r = await ctl(['--json', 'view', '--context', 'tape-all', src.bare, d]);
    assert.equal(r.code, 0, r.err);
    const v = JSON.parse(r.out) as P.ViewResult;
    assert.equal(v.mechanism, 'bindfs');
    assert.deepEqual(v.bindfs, ['-o', 'ro', '--force-user=65533', '--force-group=65533']);
    for (const name of ['root', 'hpa', 'alien', 'pub']) assert.equal(ids(join(d, name)), '65533:65533');
    assert.match(as(B + 1000, ['touch', join(d, 'pub', 'x')]).stderr, /Read-only file system/);
    assert.match(
      as(65533, ['sh', '-c', `echo x >> ${join(d, 'hpa')}`]).stderr,
      /Read-only file system/,
      'not even anonuid, who owns every file in the view, writes',
    );
    // explain through a bindfs view explains the file on disk behind it, in its context.
    const d3 = dst();
    assert.equal((await ctl(['view', src.tape, d3])).code, 0);
    const ex = await ctl(['explain', join(d3, 'hpa')]);
    assert.equal(ex.code, 0, ex.err);
    assert.match(ex.out, new RegExp(`^view: {4}a foreign view of ${src.tape} \\(context tape-all\\): on disk this is ${src.tape}/hpa$`, 'm'));
    assert.match(ex.out, /^uid: shown here as 65533; on disk 1000$/m);
    assert.match(ex.out, /^label: {3}tape-all /m);
    assert.equal(umount(d3).status, 0);
    // The identity view of the same context is an idmapped mount as usual.
    const d2 = dst();
    assert.match((await ctl(['view', '--identity', '--context', 'tape-all', src.bare, d2])).out, /identity \(squash all\), idmapped/);
    assert.equal(ids(join(d2, 'hpa')), `${B + 65536 + 1000}:${B + 65536 + 1000}`);
    for (const x of [d, d2]) assert.equal(umount(x).status, 0);
  });

  it('a view is of one mount, as mount --bind: a filesystem mounted inside the tree is not part of it', async () => {
    const sub = join(src.rootfs, 'sub');
    mkdirSync(sub);
    writeFileSync(join(sub, 'under'), 'hidden by the submount');
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', 'usernsd-sub', sub]).status, 0);
    writeFileSync(join(sub, 'on-submount'), 'x');
    try {
      const d = dst();
      assert.equal((await ctl(['view', src.rootfs, d])).code, 0);
      assert.deepEqual(readdirSync(join(d, 'sub')), ['under'], 'the labelled tree ends at the mount point, as the label walk does');
      assert.equal(umount(d).status, 0);
    } finally {
      spawnSync('umount', [sub]);
    }
  });

  it('the descriptor socket holds at most 8 connections per user; root is served beyond them', async () => {
    const fdSock = agent.socket.replace(/\.sock$/, '.fd.sock');
    // A user opens 10 connections and holds them; the kernel tells it which were closed at once.
    const hold = `const net = require('net'); let closed = 0; const socks = []; for (let i = 0; i < 10; i++) { const s = net.connect(process.argv[1]); s.on('close', () => closed++); s.on('error', () => {}); socks.push(s); } setTimeout(() => { console.log(closed); process.exit(0); }, 1500);`;
    const held = spawnSync('setpriv', [`--reuid=${stranger.uid}`, `--regid=${stranger.gid}`, '--clear-groups', process.execPath, '-e', hold, fdSock], {
      encoding: 'utf8',
    });
    assert.equal(held.stdout.trim(), '2', held.stderr);
    const d = dst();
    assert.equal((await ctl(['view', src.rootfs, d])).code, 0, 'root is served');
    assert.equal(umount(d).status, 0);
  });

  it("a view of a nested context composes its map through the parent's", async () => {
    const d = dst();
    const r = await ctl(['view', '--identity', '--context', 'www', src.bare, d]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`uid 0 ${B + 1000} 100, gid 0 ${B + 1000} 100`));
    assert.equal(ids(join(d, 'root')), `${B + 1000}:${B + 1000}`, "on-disk 0 is www's root: the parent's 1000");
    assert.equal(ids(join(d, 'hpa')), `${OVERFLOW}:${OVERFLOW}`, 'www maps only 0-99');
    assert.equal(umount(d).status, 0);
  });

  it('a FUSE tree of a context without squash gets a foreign view through bindfs', async function () {
    if (!hasBindfs) this.skip();
    const d = dst();
    const r = await ctl(['view', '--context', 'plain', src.fuse, d]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /foreign \(squash none\), bindfs \(bindfs -o ro --uid-offset=6231072 --gid-offset=6231072\)/);
    assert.equal(ids(join(d, 'root')), `${B + 131072}:${B + 131072}`);
    assert.equal(umount(d).status, 0);
  });

  it("seed 002: the owner, without root, enters with a view and works on the sealed backup as its true owners; host root's files stay out of reach", async () => {
    const d = dst();
    assert.notEqual(as(owner.uid, ['ls', src.sealed]).status, 0, 'on the host the owner cannot reach the sealed tree');
    chmodSync(d, 0o777);
    const hostFile = join(tree.dir, 'host-root-file');
    writeFileSync(hostFile, 'host', { mode: 0o644 });
    chmodSync(tree.dir, 0o755);
    const script = `id -u; stat -c '%n %u:%g' ${d}/root ${d}/hpa ${d}/alien; touch ${d}/new-by-owner; echo x > ${d}/hpa && echo wrote-hpa; chown 1000:1000 ${d}/new-by-owner && echo chowned; (echo x >> ${hostFile}) 2>/dev/null || echo host-file-refused; (chown 70000 ${d}/new-by-owner) 2>/dev/null || echo alien-refused`;
    const r = await ctl(['enter', 'hpa-backups', '--view', `${src.sealed}:${d}`, '--', 'sh', '-c', script], { user: owner });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out.trim().split('\n'), [
      '0',
      `${d}/root 0:0`,
      `${d}/hpa 1000:1000`,
      `${d}/alien ${OVERFLOW}:${OVERFLOW}`,
      'wrote-hpa',
      'chowned',
      'host-file-refused',
      'alien-refused',
    ]);
    assert.equal(ids(join(src.sealed, 'new-by-owner')), '1000:1000', 'on disk: the raw id the owner gave it');
    assert.equal(readFileSync(join(src.sealed, 'hpa'), 'utf8'), 'x\n');
    assert.equal(readFileSync(hostFile, 'utf8'), 'host');
    assert.deepEqual(mountsUnder(d), [], "the owner's view lives in its own mount namespace only");
    // Root sees the same tree squashed, through a foreign view from fstab.
    const f = dst();
    const seen = fstabMount(
      mountHelpers.at(-1)!.argv,
      `${src.sealed} ${f} usernsd context=hpa-backups,mode=foreign,socket=${agent.socket},nofail 0 0`,
      f,
      `stat -c '%n %u:%g' ${f}/root ${f}/new-by-owner`,
    );
    assert.equal(seen.status, 0, seen.stderr);
    assert.equal(seen.stdout, `${f}/root ${OVERFLOW}:${OVERFLOW}\n${f}/new-by-owner ${B + 1000}:${B + 1000}\n`);
  });

  it("an owner's view of a tree other host users can reach is read-only, and says how to seal it: nothing lands on disk", async () => {
    const d = dst();
    chmodSync(d, 0o777);
    const script = `touch ${d}/planted 2>/dev/null || echo create-refused; (echo x > ${d}/hpa) 2>/dev/null || echo write-refused; cat ${d}/hpa`;
    const r = await ctl(['enter', 'hpa-backups', '--view', `${src.rootfs}:${d}`, '--', 'sh', '-c', script], { user: owner });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out.trim().split('\n'), ['create-refused', 'write-refused', 'hpa']);
    assert.match(
      r.err,
      new RegExp(`usernsctl: the view of ${src.rootfs} is read-only: ${src.rootfs} is reachable by users other than root .*mkdir -m 0700 /srv/usernsd`),
    );
    assert.ok(!existsSync(join(src.rootfs, 'planted')));
  });

  /**
   * The two mount helpers, one contract (mount.usernsd(8)): the C program make install puts in /sbin
   * and the Node one (usernsctl mount-helper) it replaced, kept for a build without a C compiler.
   */
  const C_MOUNT_HELPER = new URL('../../dist/mount.usernsd', import.meta.url).pathname;
  const mountHelpers = [
    { name: 'usernsctl mount-helper', argv: [process.execPath, USERNSCTL, 'mount-helper'] },
    ...(existsSync(C_MOUNT_HELPER) || process.env.CI ? [{ name: 'the C helper, dist/mount.usernsd', argv: [C_MOUNT_HELPER] }] : []),
  ];

  /**
   * mount(8) with an fstab line, in a private mount namespace where an overlay adds the helper to
   * /sbin (mount(8) finds helpers there only), then CMD, then umount: nothing reaches the host.
   */
  function fstabMount(helper: string[], line: string, target: string, cmd: string) {
    const helpers = join(tree.dir, `helpers${helper.length}`);
    if (!existsSync(helpers)) {
      mkdirSync(helpers);
      writeFileSync(join(helpers, 'mount.usernsd'), `#!/bin/sh\nexec ${helper.join(' ')} "$@"\n`, { mode: 0o755 });
    }
    const fstab = join(tree.dir, `fstab${++n}`);
    writeFileSync(fstab, `# seed 002: root sees the backup squashed\n${line}\n`);
    const script = `set -e; mount -t overlay overlay -o lowerdir=${helpers}:/usr/sbin /usr/sbin; mount -T ${fstab} ${target}; ${cmd}; umount ${target}; grep -c " ${target} " /proc/self/mountinfo || true`;
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' });
    const lines = r.stdout.trimEnd().split('\n');
    return { status: r.status === 0 && lines.pop() === '0' ? 0 : 1, stdout: lines.map((l) => l + '\n').join(''), stderr: r.stderr };
  }

  for (const { name, argv } of mountHelpers) {
    it(`the fstab route through ${name}: mount -T FSTAB DST, in a mount namespace of its own; umount removes the view`, async () => {
      const d = dst();
      const r = fstabMount(
        argv,
        `${src.rootfs} ${d} usernsd context=hpa-backups,mode=foreign,socket=${agent.socket},nofail,x-systemd.requires=usernsd.service 0 0`,
        d,
        `stat -c '%u:%g' ${d}/root ${d}/hpa; grep -c " ${d} .*idmapped" /proc/self/mountinfo`,
      );
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), [`${OVERFLOW}:${OVERFLOW}`, `${B + 1000}:${B + 1000}`, '1']);
      assert.deepEqual(mountsUnder(d), [], "made in the caller's mount namespace, not the agent's");
    });

    it(`${name} speaks mount(8)'s language: exit 1 for usage, 32 for a refusal, errors as the agent says them`, async () => {
      const d = dst();
      const helper = (args: string[], opts: { uid?: number; env?: NodeJS.ProcessEnv } = {}) =>
        spawnSync(argv[0], [...argv.slice(1), ...args], { encoding: 'utf8', uid: opts.uid, gid: opts.uid, env: opts.env ?? process.env });
      const sock = `socket=${agent.socket}`;
      const cases: [string[], number, RegExp, { uid?: number; env?: NodeJS.ProcessEnv }?][] = [
        [
          [src.rootfs, d, '-o', 'contxt=hpa-backups'],
          1,
          /^mount.usernsd: unknown option "contxt=hpa-backups": mount -t usernsd takes context=LABEL, mode=identity\|foreign, ro, rw, socket=PATH\n$/,
        ],
        [[src.rootfs], 1, /^mount.usernsd: mount.usernsd takes SRC and DST\n$/],
        [[src.rootfs, d, 'extra'], 1, /^mount.usernsd: mount.usernsd takes SRC and DST\n$/],
        [['/proc', d, '-o', `context=hpa-backups,${sock}`], 32, /^mount.usernsd: E_INVALID: no view is made of \/proc/],
        [
          [src.rootfs, tree.dir, '-o', sock],
          32,
          new RegExp(`^mount.usernsd: E_INVALID: ${tree.dir} is not empty: a view is mounted on an empty directory, so that it hides nothing\n$`),
        ],
        [
          [src.rootfs, join(d, 'none'), '-o', sock],
          32,
          new RegExp(`^mount.usernsd: E_INVALID: ${d}/none: ENOENT: a view is mounted on an existing empty directory\n$`),
        ],
        [
          [src.rootfs, d, '-o', 'socket=/nonexistent/usernsd.sock'],
          32,
          /^mount.usernsd: cannot reach the agent at \/nonexistent\/usernsd\.fd\.sock: ENOENT\n$/,
        ],
        [[src.rootfs, d, '-o', sock], 32, /^mount.usernsd: E_PERMISSION: views are mounted by root\n$/, { uid: owner.uid }],
        [
          [src.rootfs, d],
          32,
          /^mount.usernsd: cannot reach the agent at \/nonexistent\/x\.fd: ENOENT\n$/,
          { env: { ...process.env, USERNSD_SOCKET: '/nonexistent/x' } },
        ],
      ];
      for (const [args, status, err, opts] of cases) {
        const r = helper(args, opts);
        assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, err, args.join(' '));
      }
      assert.deepEqual(readdirSync(d), [], 'nothing mounted by a refusal');
      // Relative paths and the generic options mount(8) passes along (-n, -v, -t, defaults, x-*).
      const rel = spawnSync(
        argv[0],
        [
          ...argv.slice(1),
          'rootfs',
          `./${d.slice(tree.dir.length + 1)}/../${d.slice(tree.dir.length + 1)}`,
          '-n',
          '-v',
          '-t',
          'usernsd',
          '-o',
          `defaults,ro,x-gvfs-hide,${sock}`,
        ],
        { encoding: 'utf8', cwd: tree.dir },
      );
      assert.equal(rel.status, 0, rel.stderr);
      try {
        assert.equal(ids(join(d, 'hpa')), `${B + 1000}:${B + 1000}`);
        const listed = (JSON.parse((await ctl(['--json', 'view', '--list'])).out) as P.ViewsResult).views.find((v) => v.target === d);
        assert.deepEqual([listed?.src, listed?.readOnly], [src.rootfs, true], 'the agent recorded the view as asked: absolute paths, read-only');
      } finally {
        assert.equal(umount(d).status, 0);
      }
    });

    it(`${name} mounts a bindfs view the agent chose (all squash), and says bindfs's own error`, async function () {
      if (!hasBindfs) this.skip();
      const d = dst();
      const r = spawnSync(argv[0], [...argv.slice(1), src.tape, d, '-o', `socket=${agent.socket}`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      try {
        assert.equal(ids(join(d, 'hpa')), '65533:65533', 'every file as the anonymous owner');
        assert.match(readFileSync('/proc/self/mountinfo', 'utf8'), new RegExp(` ${d} [^\n]* - fuse[^\n]*\n`));
      } finally {
        assert.equal(umount(d).status, 0);
      }
      // bindfs refusing (its mount point vanished between the agent's answer and bindfs): its words, exit 32.
      const path = `${tree.dir}/fakebin`;
      mkdirSync(path, { recursive: true });
      writeFileSync(join(path, 'bindfs'), '#!/bin/sh\necho "fuse: bad mount point: No such file or directory" >&2\nexit 1\n', { mode: 0o755 });
      const failed = spawnSync(argv[0], [...argv.slice(1), src.tape, d, '-o', `socket=${agent.socket}`], {
        encoding: 'utf8',
        env: { ...process.env, PATH: `${path}:${process.env.PATH}` },
      });
      assert.equal(failed.status, 32);
      assert.match(
        failed.stderr,
        new RegExp(
          `^mount.usernsd: E_KERNEL: bindfs -o ro --force-user=65533 --force-group=65533 ${src.tape} ${d} failed: fuse: bad mount point: No such file or directory\n$`,
        ),
      );
    });
  }

  it('view --list shows the views mounted here, and a restarted agent finds them again', async () => {
    const d1 = dst();
    const d2 = dst();
    assert.equal((await ctl(['view', src.rootfs, d1])).code, 0);
    assert.equal((await ctl(['view', '--identity', '--read-only', src.tmpfs, d2])).code, 0);
    const list = async () =>
      (JSON.parse((await ctl(['--json', 'view', '--list'])).out) as P.ViewsResult).views
        .filter((v) => v.target === d1 || v.target === d2)
        .map((v) => [v.src, v.target, v.context, v.mode, v.mechanism, v.readOnly]);
    assert.deepEqual(await list(), [
      [src.rootfs, d1, 'hpa-backups', 'foreign', 'idmapped', false],
      [src.tmpfs, d2, 'hpa-backups', 'identity', 'idmapped', true],
    ]);
    assert.match(as(B + 1000, ['touch', join(d2, 'pub', 'x')]).stderr, /Read-only file system/);
    await agent.stop();
    agent = await startAgent(tree);
    const human = (await ctl(['view', '--list'])).out;
    assert.match(human, new RegExp(`${src.tmpfs}\\s+${d2}\\s+hpa-backups\\s+identity\\s+idmapped\\s+ro`));
    assert.equal(umount(d1).status, 0);
    assert.deepEqual(
      (await list()).map((v) => v[1]),
      [d2],
      'an unmounted view is not listed',
    );
    assert.equal(umount(d2).status, 0);
  });

  it('refuses with errors that say why: kernel trees, pins, a busy DST, no label, the wrong caller, bindfs missing', async function () {
    const d = dst();
    const refusals: [string[], RegExp, Parameters<typeof usernsctl>[1]?][] = [
      [['view', '--context', 'hpa-backups', '/proc/self', d], /E_INVALID: no view is made of \/proc\/\d+: it is inside \/proc, a kernel filesystem/],
      [['view', '--context', 'hpa-backups', '/sys/kernel', d], /E_INVALID: no view is made of \/sys\/kernel/],
      [['view', '--context', 'hpa-backups', tree.pins, d], /E_INVALID: no view is made of .*the agent's own directory/],
      [['view', src.rootfs, tree.dir], /E_INVALID: .* is not empty: a view is mounted on an empty directory/],
      [['view', join(tree.dir, 'helpers-none'), d], /E_NOT_FOUND/],
      [['view', tree.contexts, d], /E_NOT_FOUND: no trusted.userns label on/],
      [['view', src.rootfs, d], /E_PERMISSION: views are mounted by root/, { user: owner }],
      [
        ['view', '--context', 'plain', src.rootfs, d],
        /E_INVALID: .*rootfs is labelled hpa-backups \(on .*\), not plain: the label says whose ids are on disk; drop --context, or relabel/,
      ],
      [['enter', 'hpa-backups', '--view', `${src.rootfs}:${d}`, '--', 'true'], /E_PERMISSION: uid \d+ may not use context "hpa-backups"/, { user: stranger }],
      [['enter', 'plain', '--view', `${src.rootfs}:${d}`, '--', 'true'], /E_PERMISSION: .* belongs to context "hpa-backups" .*, not "plain"/, { user: owner }],
    ];
    for (const [args, re, opts] of refusals) {
      const r = await ctl(args, opts);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.out}${r.err}`);
      assert.match(r.err, re, `${args.join(' ')}: ${r.err}`);
    }
    assert.deepEqual(mountsUnder(d), []);
    if (!hasBindfs) return this.skip();
    const noBindfs = await ctl(['view', '--context', 'tape-all', src.bare, d], { env: { PATH: '/nonexistent' } });
    assert.match(noBindfs.err, /E_UNSUPPORTED: bindfs is not installed: install it \(Debian: apt-get install bindfs\)/);
  });

  it("list says a nested context without an owner line belongs to its parent's root, not to host root", async () => {
    const r = await ctl(['list']);
    assert.match(r.out, /^www\s+hpa-backups\s+hpa-backups's root\s/m, r.out + r.err);
    assert.match(r.out, /^plain\s+host\s+root\s/m, r.out);
  });

  it('an agent in a mount namespace of its own, read-only where the tree is, makes writable views where the caller is', async () => {
    const tree2 = makeTree();
    try {
      tree2.context('hpa-backups.conf', `[context]\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\n`);
      // As systemd's ProtectSystem= does: the agent's copy of the tree is read-only.
      const wrap = [
        'unshare',
        '--mount',
        '--propagation',
        'slave',
        'sh',
        '-c',
        'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
        src.rootfs,
      ];
      const agent2 = await startAgent(tree2, ['--log-level', 'debug'], { wrap });
      const d = dst();
      const r = await usernsctl(['--socket', agent2.socket, 'view', '--identity', '--context', 'hpa-backups', src.rootfs, d]);
      assert.equal(r.code, 0, r.err);
      assert.equal(as(B + 1000, ['touch', join(d, 'pub', 'through-worker')]).status, 0, "the view is writable: made in the caller's namespace");
      assert.equal(ids(join(src.rootfs, 'pub', 'through-worker')), '1000:1000');
      assert.equal(umount(d).status, 0);
      assert.equal(await agent2.stop(), 0);
    } finally {
      await cleanup(tree2);
    }
  });

  it('leaves nothing behind: no view mounted, no bindfs of ours running but the FUSE source', () => {
    const ours = spawnSync('pgrep', ['-a', 'bindfs'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((l) => l.includes(tree.dir));
    assert.ok(ours.length <= 1, ours.join('\n'));
    assert.deepEqual(
      mountsUnder(tree.dir).filter((m) => /dst\d+$/.test(m)),
      [],
    );
  });
});
