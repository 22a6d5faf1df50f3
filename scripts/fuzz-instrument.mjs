// Coverage instrumentation for the TypeScript fuzzer (scripts/fuzz-ts.mjs), in the manner of libFuzzer's
// inline 8-bit counters: every basic-block entry of the instrumented JavaScript gets a counter
// `__rustasrFuzzCounters[k]++`. Blocks are function bodies, both arms of every `if` (an absent `else` gets
// one), both arms of `?:`, the right operand of `&&` / `||` / `??` (and their assignments), loop bodies,
// `case` / `default` clauses (a switch without `default` gets one), `catch` and `finally` blocks.
//
// The code is parsed and printed with the TypeScript compiler API (already a devDependency), so nothing is
// added to the project. Each instrumented module asks the fuzzer for its counter range at load time:
//
//   var __rustasrFuzzCounters = globalThis.__rustasrFuzz?.alloc(url, N, lines) ?? new Uint32Array(N);
//
// (`lines`: the source line of each counter.)
//
// `registerCoverageHooks(urls)` installs a module loader hook (node:module register) that instruments the
// modules whose URL is in `urls` as they are imported; everything else loads untouched.
import { register } from 'node:module';

const COUNTERS = '__rustasrFuzzCounters';

/**
 * Instruments one ES module / script. Returns the new source text and the number of counters it uses.
 * `ts` is the `typescript` module (passed in so this file imports nothing heavy by itself).
 */
export function instrumentSource(ts, code, name) {
  const sf = ts.createSourceFile(name, code, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  let n = 0;
  /** Source line (1-based) of each counter, for the report of counters never reached. */
  const lines = [];
  let line = 0;
  const transformer = (context) => {
    const f = context.factory;
    const hit = () => {
      lines.push(line);
      return f.createPostfixIncrement(f.createElementAccessExpression(f.createIdentifier(COUNTERS), f.createNumericLiteral(n++)));
    };
    const hitStmt = () => f.createExpressionStatement(hit());
    /** `(counter++, expr)` */
    const withHit = (expr) => f.createParenthesizedExpression(f.createComma(hit(), expr));
    /** A statement as a block that starts with a counter. */
    const blockWithHit = (stmt) => {
      if (stmt && ts.isBlock(stmt)) return f.updateBlock(stmt, [hitStmt(), ...stmt.statements]);
      return f.createBlock(stmt ? [hitStmt(), stmt] : [hitStmt()], true);
    };
    /** Prepends a counter to a function body, after its directive prologue ('use strict'). */
    const bodyWithHit = (body) => {
      if (!body) return body;
      if (!ts.isBlock(body)) return withHit(body); // arrow function with an expression body
      let i = 0;
      while (i < body.statements.length && ts.isExpressionStatement(body.statements[i]) && ts.isStringLiteral(body.statements[i].expression)) i++;
      return f.updateBlock(body, [...body.statements.slice(0, i), hitStmt(), ...body.statements.slice(i)]);
    };
    const LOGICAL = new Set([
      ts.SyntaxKind.AmpersandAmpersandToken,
      ts.SyntaxKind.BarBarToken,
      ts.SyntaxKind.QuestionQuestionToken,
      ts.SyntaxKind.AmpersandAmpersandEqualsToken,
      ts.SyntaxKind.BarBarEqualsToken,
      ts.SyntaxKind.QuestionQuestionEqualsToken,
    ]);
    const visit = (node) => {
      node = ts.visitEachChild(node, visit, context);
      const orig = ts.getOriginalNode(node);
      line = orig.pos >= 0 ? sf.getLineAndCharacterOfPosition(orig.getStart(sf)).line + 1 : line;
      switch (node.kind) {
        case ts.SyntaxKind.FunctionDeclaration:
        case ts.SyntaxKind.FunctionExpression:
        case ts.SyntaxKind.ArrowFunction:
        case ts.SyntaxKind.MethodDeclaration:
        case ts.SyntaxKind.Constructor:
        case ts.SyntaxKind.GetAccessor:
        case ts.SyntaxKind.SetAccessor: {
          if (!node.body) return node;
          const body = bodyWithHit(node.body);
          switch (node.kind) {
            case ts.SyntaxKind.FunctionDeclaration:
              return f.updateFunctionDeclaration(node, node.modifiers, node.asteriskToken, node.name, node.typeParameters, node.parameters, node.type, body);
            case ts.SyntaxKind.FunctionExpression:
              return f.updateFunctionExpression(node, node.modifiers, node.asteriskToken, node.name, node.typeParameters, node.parameters, node.type, body);
            case ts.SyntaxKind.ArrowFunction:
              return f.updateArrowFunction(node, node.modifiers, node.typeParameters, node.parameters, node.type, node.equalsGreaterThanToken, body);
            case ts.SyntaxKind.MethodDeclaration:
              return f.updateMethodDeclaration(node, node.modifiers, node.asteriskToken, node.name, node.questionToken, node.typeParameters, node.parameters, node.type, body);
            case ts.SyntaxKind.Constructor:
              return f.updateConstructorDeclaration(node, node.modifiers, node.parameters, body);
            case ts.SyntaxKind.GetAccessor:
              return f.updateGetAccessorDeclaration(node, node.modifiers, node.name, node.parameters, node.type, body);
            default:
              return f.updateSetAccessorDeclaration(node, node.modifiers, node.name, node.parameters, body);
          }
        }
        case ts.SyntaxKind.IfStatement:
          return f.updateIfStatement(
            node,
            node.expression,
            blockWithHit(node.thenStatement),
            // An `else if` chain: the inner `if` counts its own arms.
            node.elseStatement && ts.isIfStatement(node.elseStatement) ? node.elseStatement : blockWithHit(node.elseStatement),
          );
        case ts.SyntaxKind.ConditionalExpression:
          return f.updateConditionalExpression(node, node.condition, node.questionToken, withHit(node.whenTrue), node.colonToken, withHit(node.whenFalse));
        case ts.SyntaxKind.BinaryExpression:
          if (!LOGICAL.has(node.operatorToken.kind)) return node;
          return f.updateBinaryExpression(node, node.left, node.operatorToken, withHit(node.right));
        case ts.SyntaxKind.ForStatement:
          return f.updateForStatement(node, node.initializer, node.condition, node.incrementor, blockWithHit(node.statement));
        case ts.SyntaxKind.ForOfStatement:
          return f.updateForOfStatement(node, node.awaitModifier, node.initializer, node.expression, blockWithHit(node.statement));
        case ts.SyntaxKind.ForInStatement:
          return f.updateForInStatement(node, node.initializer, node.expression, blockWithHit(node.statement));
        case ts.SyntaxKind.WhileStatement:
          return f.updateWhileStatement(node, node.expression, blockWithHit(node.statement));
        case ts.SyntaxKind.DoStatement:
          return f.updateDoStatement(node, blockWithHit(node.statement), node.expression);
        case ts.SyntaxKind.CaseClause:
          return f.updateCaseClause(node, node.expression, [hitStmt(), ...node.statements]);
        case ts.SyntaxKind.DefaultClause:
          return f.updateDefaultClause(node, [hitStmt(), ...node.statements]);
        case ts.SyntaxKind.CaseBlock:
          if (node.clauses.some((c) => ts.isDefaultClause(c))) return node;
          return f.updateCaseBlock(node, [...node.clauses, f.createDefaultClause([hitStmt()])]);
        case ts.SyntaxKind.CatchClause:
          return f.updateCatchClause(node, node.variableDeclaration, blockWithHit(node.block));
        case ts.SyntaxKind.TryStatement:
          return node.finallyBlock ? f.updateTryStatement(node, node.tryBlock, node.catchClause, blockWithHit(node.finallyBlock)) : node;
        default:
          return node;
      }
    };
    return (root) => ts.visitNode(root, visit);
  };
  const out = ts.transform(sf, [transformer]);
  const printed = ts.createPrinter({ newLine: ts.NewLineKind.LineFeed }).printFile(out.transformed[0]);
  out.dispose();
  const header = `var ${COUNTERS} = globalThis.__rustasrFuzz?.alloc(${JSON.stringify(name)}, ${n}, ${JSON.stringify(lines)}) ?? new Uint32Array(${n});\n`;
  return { code: header + printed, counters: n, lines };
}

// ------------------------------------------------------------------------------------ module loader hook
// The functions below run in the loader-hook thread (node:module register loads this same file there).

let hookUrls = new Set();
let hookTs;

/** Loader hook: receives the URLs to instrument. */
export async function initialize(data) {
  hookUrls = new Set(data.urls);
  hookTs = (await import('typescript')).default;
}

/** Loader hook: instruments the source of the listed modules. */
export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (!hookUrls.has(url) || result.source == null) return result;
  const { code } = instrumentSource(hookTs, String(result.source), url);
  return { ...result, source: code, shortCircuit: true };
}

/** Installs the hook in the current thread; modules imported afterwards whose URL is in `urls` are instrumented. */
export function registerCoverageHooks(urls) {
  register(import.meta.url, { data: { urls: [...urls] } });
}
