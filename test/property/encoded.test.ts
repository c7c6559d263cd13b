// A resolve answered from its JSON text made once (EncodedResult) must go out as the very bytes node-ipc's encoding of the object would.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { EncodedResult, encodeFrame, encodeReplyFrame, REPLY_TYPE } from '../../agent/wire/protocol.ts';

describe('property: replies with an encoded result', () => {
  it('are byte for byte the frame of the object they stand for, whatever the id and the result', () => {
    const id = fc.oneof(fc.integer(), fc.string(), fc.constant(null));
    const result = fc.jsonValue().map((v) => ({ v, label: 'a', path: '/run/userns/a "\\\u2028' }));
    fc.assert(
      fc.property(id, result, (i, r) => {
        const encoded = new EncodedResult(JSON.stringify(r));
        assert.equal(encodeReplyFrame(i, encoded), encodeFrame(REPLY_TYPE, { id: i, result: r }));
        // Anywhere else (the descriptor socket's frames, a log) it serializes as the value itself.
        assert.equal(JSON.stringify({ result: encoded }), JSON.stringify({ result: r }));
      }),
      { numRuns: 500 },
    );
  });
});
