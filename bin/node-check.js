// Refuse, in one line, to run on a Node older than package.json's engines field. Plain old JavaScript
// on purpose: this file must parse on the old Node it is about to reject.
var need = [22, 13];
var have = process.versions.node.split('.').map(Number);
if (have[0] < need[0] || (have[0] === need[0] && have[1] < need[1])) {
  process.stderr.write(process.argv[1].split('/').pop().replace(/\.js$/, '') + ': needs Node.js >= ' + need.join('.') +
    ', this is ' + process.version + ' (' + process.execPath + '); run it with the Node from the project\'s npm ci, or install a newer Node\n');
  process.exit(1);
}
