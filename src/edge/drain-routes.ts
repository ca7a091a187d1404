import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requireGrant, type TokenService } from '../auth/tokens.ts';
import type { Cluster } from '../cluster/cluster.ts';
import type { NodeRecord } from '../cluster/node-registry.ts';
import { AppError } from '../common/errors.ts';
import { authenticate } from '../http/auth.ts';
import type { NodeHops } from './node-hops.ts';

/** How long a drain request relayed to its node may take to be answered. */
const RELAY_TIMEOUT_MS = 5000;

/**
 * The admin side of a drain (issue 10, item 5; docs/cluster.md): `POST
 * /video/nodes/:node/drain` puts a node in draining (its rooms move to other nodes, it
 * takes no new ones, it stays up) and `DELETE` ends it. Any node answers: a request for
 * another node is relayed there with the node credential, once (a relayed request for a
 * node other than its receiver is refused: the views disagree). Admin token, checked here
 * and by the node it is relayed to.
 */
export function drainRoutes(app: FastifyInstance, deps: { tokens: TokenService; cluster: Cluster | undefined; hops: NodeHops }): void {
  const { tokens, cluster, hops } = deps;
  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    const id = (req.params as { node: string }).node;
    if (cluster === undefined) throw new AppError('NOT_FOUND', 'this node is not in a cluster (SCV_REDIS_URL is unset)');
    if (id !== cluster.node) {
      const node = hops.relayed(req.raw) ? undefined : cluster.nodes().find((n) => n.id === id);
      if (node === undefined) throw new AppError('NODE_NOT_FOUND', `no live node "${id}" in this cluster`, { node: id });
      return relay(node, req, reply, hops);
    }
    if (req.method === 'DELETE') {
      await cluster.cancelDrain();
      return { node: id, draining: false };
    }
    const drain = await cluster.drain();
    reply.status(202);
    return { node: id, draining: true, rooms: drain.toMove() };
  };
  app.post('/video/nodes/:node/drain', handler);
  app.delete('/video/nodes/:node/drain', handler);
}

async function relay(node: NodeRecord, req: FastifyRequest, reply: FastifyReply, hops: NodeHops): Promise<FastifyReply> {
  let res: Response;
  try {
    res = await fetch(`${node.url}${req.url}`, {
      method: req.method,
      headers: { authorization: req.headers.authorization ?? '', ...hops.credential(req.method, req.url) },
      signal: AbortSignal.timeout(RELAY_TIMEOUT_MS),
    });
  } catch {
    throw new AppError('MEDIA_UNAVAILABLE', `node "${node.id}" is not answering; try again`, { node: node.id });
  }
  reply.status(res.status).header('content-type', res.headers.get('content-type') ?? 'application/json');
  return reply.send(await res.text());
}
